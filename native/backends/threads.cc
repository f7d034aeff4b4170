// Thread per connection: the model reactors and proactors were invented to beat, as a backend.
//
// Every socket (connection or listener) gets its own native thread, which waits in the kernel on
// that one socket and does its syscalls: recv() into the buffer a submit_read() gave, send() from
// a submit_write()'s, accept(), the end of a connect(). What a thread finished is handed to the
// loop thread through a ready list and one wake descriptor (poll_fd(): an eventfd on Linux, a pipe
// elsewhere), and drain() turns it into events in the same batch as every other backend: no call
// into JavaScript per event. Its native pattern is its own ("thread-per-connection"); both APIs
// are emulated on it:
//   proactor — the socket's thread does the syscall for the operation at the head of each queue
//              (one read, one write, one accept, the connect) and posts its result;
//              set_streaming(kRead) has it recv() into a buffer of its own, which drain() copies
//              into the batch arena;
//   reactor  — watch() has the thread wait for the direction and report it once; flush() (after
//              JavaScript handled the batch) asks again while the interest stays, so readiness is
//              level-triggered as on epoll; try_read/try_write/try_accept are non-blocking calls
//              on the loop thread.
//
// Why the thread waits in ppoll() on its socket and then makes the syscall, instead of sitting in
// a blocking recv(): one thread serves both directions of a full-duplex connection (a read can
// wait for ever while a write must go out), and it must be interruptible without a race, for a
// new operation, a cancel or a close. A thread keeps our signal (SIGRTMIN+7, as the thread pool's)
// blocked except inside ppoll(), which unblocks it atomically: a signal sent at any moment after
// the loop changed the thread's requests interrupts the wait (EINTR) or is taken at its start.
// The syscall after the wait is then made with the thread's lock held and never blocks (the
// sockets stay O_NONBLOCK), so whenever the loop holds that lock the thread is not touching a
// buffer: a cancel sees either the real result or an operation that has not started, and recalls
// it at once — ECANCELED only if it really was cancelled, a half-sent write torn by core's rules
// (core/socket_operations.h, which holds the queues and every contract rule). close() and the
// destructor set `exit`, signal and join: bounded, whatever the peer does.
//
// Cost per connection: one thread with a 64 KiB stack (plus a guard page; the kernel keeps its own
// ~16 KiB kernel stack and task struct), a Worker of ~250 bytes, and a 64 KiB buffer allocated on
// the first read_start (pages the kernel never fills are not resident). When the OS refuses a
// thread (pthread_create: EAGAIN, the RLIMIT_NPROC or memory limit), accept and connect fail with
// -EAGAIN: a normal error, never an abort.
//
// Timers: the loop's TimerHeap, with one timer thread that sleeps until its earliest deadline and
// then wakes the loop. Regular files: the same PooledFiles thread pool as epoll and kqueue.
//
// Never chosen by `auto` (preference 0, below every other backend): it exists to be measured.
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/eventfd.h>
#endif

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "../core/backend.h"
#include "../core/event_outbox.h"
#include "../core/handle_table.h"
#include "../core/socket_operations.h"
#include "../core/timer_heap.h"
#include "monotonic_clock.h"
#include "pooled_files.h"
#include "posix_socket.h"

namespace twinloop {
namespace {

constexpr size_t kStackSize = 64 * 1024;

#ifdef MSG_NOSIGNAL
constexpr int kSendFlags = MSG_NOSIGNAL | MSG_DONTWAIT;
#else
constexpr int kSendFlags = MSG_DONTWAIT;  // SO_NOSIGPIPE is set on every socket (posix_socket.cc)
#endif

// ppoll() where the OS has it; macOS has only pselect(), which takes the mask the same way.
int wait_for(pollfd* fds, nfds_t count, const sigset_t& mask) {
#if defined(__APPLE__)
  fd_set read_set, write_set;
  FD_ZERO(&read_set);
  FD_ZERO(&write_set);
  int highest = -1;
  for (nfds_t i = 0; i < count; ++i) {
    if (fds[i].events & POLLIN) FD_SET(fds[i].fd, &read_set);
    if (fds[i].events & POLLOUT) FD_SET(fds[i].fd, &write_set);
    highest = std::max(highest, fds[i].fd);
  }
  int rc = pselect(highest + 1, &read_set, &write_set, nullptr, nullptr, &mask);
  for (nfds_t i = 0; i < count && rc > 0; ++i) {
    fds[i].revents = static_cast<short>((FD_ISSET(fds[i].fd, &read_set) ? POLLIN : 0) |
                                        (FD_ISSET(fds[i].fd, &write_set) ? POLLOUT : 0));
  }
  return rc;
#else
  return ppoll(fds, count, nullptr, &mask);
#endif
}

class ThreadsBackend;

// What a socket's thread and the loop thread share, under `mutex`. The loop sets the requests;
// the thread does them and sets the results, then puts the socket on the backend's ready list.
// Heap-allocated, so it stays put while the handle table grows; destroyed only after the join.
struct Worker {
  std::mutex mutex;
  pthread_t thread{};
  ThreadsBackend* backend = nullptr;
  HandleId handle = -1;
  int fd = -1;  // owned by the Socket

  // Requests (loop -> thread).
  std::span<uint8_t> read_into;
  std::span<const uint8_t> write_from;  // what is left of the write handed over
  bool read_requested = false;
  bool write_requested = false;
  bool accept_requested = false;
  bool connect_requested = false;
  bool stream_read = false;
  bool watch_readable = false;  // one-shot: cleared when reported
  bool watch_writable = false;
  bool exit = false;

  // Results (thread -> loop).
  bool read_done = false;
  bool write_done = false;
  bool accept_done = false;
  bool connect_done = false;
  bool stream_done = false;  // stream_buffer holds stream_result bytes (or EOF/-errno) for the loop
  bool readable_seen = false;
  bool writable_seen = false;
  int read_result = 0;
  int write_result = 0;  // 0, or -errno
  size_t write_sent = 0;  // bytes of the write handed over that went out
  int accept_result = 0;  // the new descriptor, or -errno
  int connect_result = 0;
  int stream_result = 0;
  size_t stream_taken = 0;  // of stream_result, what the loop already copied into a batch
  std::unique_ptr<uint8_t[]> stream_buffer;

  // The kernel reports a connection's error (ECONNRESET, ETIMEDOUT…) to one syscall only; the
  // other direction then sees a bare EPIPE (send) or EOF (recv) and must still learn of it, as on
  // the readiness backends (readiness.cc read_some/write_some). Each is reported once.
  int error_for_writes = 0;  // what a recv() got, for the next send() that fails EPIPE
  int error_for_reads = 0;   // what a send() got, for the next recv() that sees EOF

  // recv()'s result (`n`, errno), with the error a send() got in place of EOF.
  int received(ssize_t n) {
    int rc = n >= 0 ? static_cast<int>(n) : -errno;
    if (rc == 0 && error_for_reads != 0) return std::exchange(error_for_reads, 0);
    if (rc < 0 && rc != kEAGAIN) error_for_writes = rc;
    return rc;
  }

  // send()'s result, with the error a recv() got in place of EPIPE.
  int sent(int rc) {
    if (rc == kEPIPE && error_for_writes != 0) return std::exchange(error_for_writes, 0);
    if (rc < 0 && rc != kEAGAIN && rc != kEPIPE) error_for_reads = rc;
    return rc;
  }

  bool listed = false;   // on the backend's ready list
  bool waiting = false;  // in ppoll(): a signal is needed to make it look at new requests
  short waiting_for = 0;  // the poll events it waits for then
  bool poked = false;    // a signal was sent since it last looked

  short wanted_events() const {
    short events = 0;
    if ((read_requested && !read_done) || (stream_read && !stream_done) || (accept_requested && !accept_done) ||
        watch_readable) {
      events |= POLLIN;
    }
    if ((write_requested && !write_done) || (connect_requested && !connect_done) || watch_writable) events |= POLLOUT;
    return events;
  }
};

struct Socket : SocketOperations {
  UniqueFd fd;
  std::unique_ptr<Worker> worker;
  // Watched directions reported since JavaScript last had a batch: asked again only by flush(),
  // so that a socket nobody reads is reported once per batch, not in a loop by its thread.
  Interest reported = Interest::kNone;
};

// The descriptors the threads wake the loop through. A base listed first, so that they close only
// after every thread (the pool's among them) has stopped.
struct WakeDescriptors {
  UniqueFd wake_read;
  UniqueFd pipe_write;  // a pipe's write end; an eventfd has one descriptor for both
  int wake_write() const { return pipe_write ? pipe_write.get() : wake_read.get(); }
};

class ThreadsBackend final : private WakeDescriptors, public PooledFileOperations<ThreadsBackend> {
 public:
  ThreadsBackend(UniqueFd wake_read, UniqueFd pipe_write, const char* wake_feature)
      : WakeDescriptors{std::move(wake_read), std::move(pipe_write)},
        info_{"threads", "thread-per-connection", {"thread-per-socket", "64k-stacks", wake_feature}},
        outbox_(wake_from_loop, this),
        files_(wake_from_thread, this) {
    interrupt_signal();
  }

  ~ThreadsBackend() override {
    // Every socket thread first (each looks only at its Worker and the ready list), then the timer
    // thread; the pool stops in files_' destructor, before the wake descriptors close.
    sockets_.for_each([&](HandleId, Socket& s) { stop_thread(s); });
    if (timer_thread_.joinable()) {
      {
        std::lock_guard lock(timer_mutex_);
        timer_stop_ = true;
      }
      timer_changed_.notify_one();
      timer_thread_.join();
    }
  }

  ThreadsBackend(const ThreadsBackend&) = delete;
  ThreadsBackend& operator=(const ThreadsBackend&) = delete;

  const BackendInfo& info() const override { return info_; }
  int poll_fd() const override { return wake_read.get(); }
  // The loop's only wait is for its wake descriptor: the sockets are waited on by their threads.
  int wait(int timeout_ms) override {
    flush();
    pollfd wake{wake_read.get(), POLLIN, 0};
    ++stats_.syscalls;
    int n = ::poll(&wake, 1, timeout_ms);
    return n < 0 && errno != EINTR ? -errno : 0;
  }

  int listen(const SocketAddress& address, const ListenOptions& options) override {
    UniqueFd fd;
    stats_.syscalls += 4;
    if (int rc = open_listener(address, options, fd); rc < 0) return rc;
    return adopt(std::move(fd), true);
  }

  int connect(const SocketAddress& address, const SocketAddress* local, int32_t op_id) override {
    UniqueFd fd;
    stats_.syscalls += local != nullptr ? 4 : 3;
    int rc = start_connect(address, local, fd);
    if (rc < 0 && rc != kEINPROGRESS) return rc;
    HandleId handle = adopt(std::move(fd), false);
    if (handle < 0) return handle;
    if (rc == 0) {
      outbox_.post({handle, EventKind::kCompleted, 0, op_id});
      return handle;
    }
    Socket* s = sockets_.find(handle);
    s->connect_op = op_id;
    hand_over(handle, *s);
    return handle;
  }

  int shutdown(HandleId handle) override {
    Socket* s = sockets_.find(handle);
    if (!s) return kEBADF;
    ++stats_.syscalls;
    return ::shutdown(s->fd.get(), SHUT_WR) == 0 ? 0 : -errno;
  }

  int close(HandleId handle, bool reset) override {
    Socket* s = sockets_.find(handle);
    if (!s) return kEBADF;
    // What the thread finished counts as done; what it did not start is withdrawn with the rest.
    s->streaming_read = false;
    s->watched = Interest::kNone;
    std::vector<int> accepted;
    {
      std::lock_guard lock(s->worker->mutex);
      take_results(handle, *s, accepted, true);
      s->worker->exit = true;
    }
    for (int fd : accepted) {
      if (fd >= 0) ::close(fd);  // the listener goes: nobody takes these connections
    }
    s->reads_held = s->writes_held = s->accepts_held = 0;
    s->connect_held = false;
    s->withdraw_unheld(handle, outbox_);
    stop_thread(*s);
    if (reset) set_reset_on_close(s->fd.get());
    ++stats_.syscalls;
    sockets_.erase(handle);
    return 0;
  }

  int address(HandleId handle, bool peer, SocketAddress& out) override {
    Socket* s = sockets_.find(handle);
    return s ? socket_address(s->fd.get(), peer, out) : kEBADF;
  }
  int set_socket_option(HandleId handle, SocketOption option, int value) override {
    Socket* s = sockets_.find(handle);
    if (!s) return kEBADF;
    ++stats_.syscalls;
    return twinloop::set_socket_option(s->fd.get(), option, value);
  }
  int socket_option(HandleId handle, SocketOption option) override {
    Socket* s = sockets_.find(handle);
    return s ? twinloop::socket_option(s->fd.get(), option) : kEBADF;
  }

  int watch(HandleId handle, Interest interest) override {
    Socket* s = sockets_.find(handle);
    if (!s) return kEBADF;
    s->watched = interest;
    s->reported = Interest::kNone;
    hand_over(handle, *s);
    return 0;
  }

  int try_read(HandleId handle, std::span<uint8_t> buffer) override {
    Socket* s = sockets_.find(handle);
    if (!s) return kEBADF;
    if (int rc = s->check_read(); rc < 0) return rc;
    ++stats_.syscalls;
    std::lock_guard lock(s->worker->mutex);
    return s->worker->received(::recv(s->fd.get(), buffer.data(), std::min(buffer.size(), kMaxTransfer), MSG_DONTWAIT));
  }

  int try_write(HandleId handle, std::span<const uint8_t> buffer) override {
    Socket* s = sockets_.find(handle);
    if (!s) return kEBADF;
    // Also keeps this send from racing the thread's own, which holds the head write.
    if (int rc = s->check_try_write(); rc < 0) return rc;
    ++stats_.syscalls;
    std::lock_guard lock(s->worker->mutex);
    return s->worker->sent(send_now(s->fd.get(), buffer));
  }

  int try_accept(HandleId handle) override {
    Socket* s = sockets_.find(handle);
    if (!s) return kEBADF;
    if (int rc = s->check_accept(); rc < 0) return rc;
    ++stats_.syscalls;
    int fd = accept_connection(s->fd.get());
    return fd < 0 ? fd : adopt(UniqueFd(fd), false);
  }

  int submit_read(HandleId handle, std::span<uint8_t> buffer, int32_t op_id) override {
    Socket* s = sockets_.find(handle);
    if (!s) return kEBADF;
    if (int rc = s->check_read(); rc < 0) return rc;
    s->reads.push_back({buffer, op_id});
    hand_over(handle, *s);
    return 0;
  }

  int submit_write(HandleId handle, std::span<const uint8_t> buffer, int32_t op_id, WriteKeep keep) override {
    Socket* s = sockets_.find(handle);
    if (!s) return kEBADF;
    if (int rc = s->check_write(); rc < 0) return rc;
    if (int rc = s->queue_write(buffer, op_id, 0, keep); rc < 0) return rc;
    hand_over(handle, *s);
    return 0;
  }

  int submit_accept(HandleId handle, int32_t op_id) override {
    Socket* s = sockets_.find(handle);
    if (!s) return kEBADF;
    if (int rc = s->check_accept(); rc < 0) return rc;
    s->accepts.push_back({op_id});
    hand_over(handle, *s);
    return 0;
  }

  int set_streaming(HandleId handle, Stream stream, bool on) override {
    Socket* s = sockets_.find(handle);
    if (!s) return kEBADF;
    if (int rc = s->set_streaming(stream, on); rc < 0) return rc;
    hand_over(handle, *s);
    // Bytes the thread read before a read_stop go first once streaming resumes.
    if (on && stream == Stream::kRead) list_ready(handle);
    return 0;
  }

  int cancel(HandleId handle, int32_t op_id) override {
    if (handle == -1) return cancel_timer(timers_, op_id, outbox_);
    Socket* s = sockets_.find(handle);
    if (!s) return kEBADF;
    CancelOutcome outcome = s->cancel(handle, op_id, outbox_);
    if (outcome == CancelOutcome::kNotFound) return kENOENT;
    if (outcome == CancelOutcome::kSettled) return 0;
    // Held by the thread: with its lock, the operation either finished (take_results gives it its
    // real result) or has not started, and is taken back from the thread now.
    std::vector<int> accepted;
    {
      Worker& w = *s->worker;
      std::lock_guard lock(w.mutex);
      take_results(handle, *s, accepted, false);
      recall(handle, *s, outcome);
    }
    for (int fd : accepted) deliver_accepted(handle, fd);
    s = sockets_.find(handle);
    if (outcome == CancelOutcome::kRecallAccept) s->settle_cancelled_accepts(handle, outbox_);
    hand_over(handle, *s);
    return 0;
  }

  int start_timer(uint64_t delay_ms, int32_t op_id) override {
    if (!timers_.push(deadline_after_ms(delay_ms), op_id)) return kEEXIST;
    arm_timer();
    return 0;
  }


  void drain(BatchSink& sink) override {
    outbox_.begin_drain(sink);
    consume_wake();
    post_finished_files();
    fire_timers();
    {
      std::lock_guard lock(ready_mutex_);
      for (HandleId handle : ready_) unprocessed_.push_back(handle);
      ready_.clear();
    }
    size_t done = 0;
    for (; done < unprocessed_.size() && !outbox_.full(); ++done) process(unprocessed_[done]);
    unprocessed_.erase(unprocessed_.begin(), unprocessed_.begin() + static_cast<std::ptrdiff_t>(done));
    outbox_.end_drain();
    if (!unprocessed_.empty()) signal_wake();
  }

  // Hands what JavaScript submitted during the batch to the threads (one signal each, for the
  // ones waiting), and asks again for the readiness of watched sockets (level triggering).
  void flush() override {
    files_.flush();
    for (HandleId handle : rearm_) {
      Socket* s = sockets_.find(handle);
      if (s == nullptr) continue;
      s->reported = Interest::kNone;
      hand_over(handle, *s);
    }
    rearm_.clear();
    for (HandleId handle : to_poke_) {
      if (Socket* s = sockets_.find(handle)) pthread_kill(s->worker->thread, interrupt_signal());
    }
    stats_.syscalls += to_poke_.size();
    to_poke_.clear();
  }

  Stats stats() const override {
    Stats stats = stats_;
    stats.syscalls += files_.syscalls() + thread_syscalls_.load(std::memory_order_relaxed);
    stats.events = outbox_.events();
    return stats;
  }

 private:
  // A new socket with its thread, or -EAGAIN when the OS refuses the thread, -EMFILE when the
  // table is full (the descriptor closes either way).
  HandleId adopt(UniqueFd fd, bool listener) {
    Socket socket;
    socket.listener = listener;
    socket.worker = std::make_unique<Worker>();
    Worker& worker = *socket.worker;
    worker.backend = this;
    worker.fd = fd.get();
    socket.fd = std::move(fd);
    HandleId handle = sockets_.insert(std::move(socket));
    if (handle < 0) return kEMFILE;
    worker.handle = handle;
    if (int rc = start_thread(worker); rc < 0) {
      sockets_.erase(handle);
      return rc;
    }
    return handle;
  }

  static int start_thread(Worker& worker) {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    size_t stack = kStackSize;
#ifdef PTHREAD_STACK_MIN
    stack = std::max<size_t>(stack, static_cast<size_t>(PTHREAD_STACK_MIN));
#endif
    pthread_attr_setstacksize(&attr, stack);
    // The thread starts with every signal blocked; its waits unblock ours (interruptible_mask).
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    int rc = pthread_create(&worker.thread, &attr, run, &worker);
    pthread_sigmask(SIG_SETMASK, &previous, nullptr);
    pthread_attr_destroy(&attr);
    return rc == 0 ? 0 : kEAGAIN;  // EAGAIN (no thread left), or EPERM/EINVAL: still "try later"
  }

  void stop_thread(Socket& s) {
    Worker& worker = *s.worker;
    {
      std::lock_guard lock(worker.mutex);
      worker.exit = true;
    }
    pthread_kill(worker.thread, interrupt_signal());
    pthread_join(worker.thread, nullptr);
    // A connection the thread accepted that nobody took: the listener goes, so does it.
    if (worker.accept_done && worker.accept_result >= 0) ::close(std::exchange(worker.accept_result, -1));
  }

  // The socket thread: wait for what is requested, do it, report it; until told to exit.
  static void* run(void* context) {
    auto& worker = *static_cast<Worker*>(context);
    const sigset_t& mask = interruptible_mask();
    std::unique_lock lock(worker.mutex);
    while (!worker.exit) {
      pollfd fd{worker.fd, worker.wanted_events(), 0};
      worker.waiting = true;
      worker.waiting_for = fd.events;
      lock.unlock();
      int rc = wait_for(&fd, fd.events != 0 ? 1 : 0, mask);
      lock.lock();
      worker.waiting = false;
      worker.poked = false;
      if (rc <= 0 || worker.exit) continue;  // EINTR: the requests changed
      if (act(worker, fd.revents)) worker.backend->list_ready_from_thread(worker);
    }
    return nullptr;
  }

  // The syscalls the socket is ready for, with the lock held: they never block. Returns whether
  // there is something new for the loop.
  static bool act(Worker& w, short revents) {
    bool readable = revents & (POLLIN | POLLHUP | POLLERR);
    bool writable = revents & (POLLOUT | POLLHUP | POLLERR);
    bool news = false;
    uint64_t syscalls = 0;
    if (readable && w.read_requested && !w.read_done) {
      ++syscalls;
      int n = w.received(::recv(w.fd, w.read_into.data(), std::min(w.read_into.size(), kMaxTransfer), MSG_DONTWAIT));
      if (n != kEAGAIN) {
        w.read_result = n;
        w.read_done = news = true;
      }
    }
    if (readable && w.stream_read && !w.stream_done) {
      if (!w.stream_buffer) w.stream_buffer = std::make_unique<uint8_t[]>(kMaxStreamRead);
      ++syscalls;
      int n = w.received(::recv(w.fd, w.stream_buffer.get(), kMaxStreamRead, MSG_DONTWAIT));
      if (n != kEAGAIN) {
        w.stream_result = n;
        w.stream_taken = 0;
        w.stream_done = news = true;
      }
    }
    if (readable && w.accept_requested && !w.accept_done) {
      ++syscalls;
      int fd = accept_connection(w.fd);
      if (fd != kEAGAIN) {
        w.accept_result = fd;
        w.accept_done = news = true;
      }
    }
    if (writable && w.connect_requested && !w.connect_done) {
      ++syscalls;
      w.connect_result = pending_socket_error(w.fd);
      w.connect_done = news = true;
    }
    while (writable && w.write_requested && !w.write_done) {
      ++syscalls;
      int n = w.sent(send_now(w.fd, w.write_from));
      if (n == kEAGAIN) break;
      if (n < 0) {
        w.write_result = n;
        w.write_done = news = true;
        break;
      }
      w.write_from = w.write_from.subspan(static_cast<size_t>(n));
      w.write_sent += static_cast<size_t>(n);
      if (w.write_from.empty()) w.write_done = news = true;
    }
    if (readable && w.watch_readable) {
      w.watch_readable = false;
      w.readable_seen = news = true;
    }
    if (writable && w.watch_writable) {
      w.watch_writable = false;
      w.writable_seen = news = true;
    }
    w.backend->thread_syscalls_.fetch_add(syscalls, std::memory_order_relaxed);
    return news;
  }

  static int send_now(int fd, std::span<const uint8_t> bytes) {
    ssize_t n = ::send(fd, bytes.data(), std::min(bytes.size(), kMaxTransfer), kSendFlags);
    return n >= 0 ? static_cast<int>(n) : -errno;
  }

  // A thread has news: its socket goes on the ready list, and the first one on it wakes the loop.
  void list_ready_from_thread(Worker& worker) {
    if (worker.listed) return;
    worker.listed = true;
    bool first;
    {
      std::lock_guard lock(ready_mutex_);
      first = ready_.empty();
      ready_.push_back(worker.handle);
    }
    if (first) write_wake();
  }

  // The loop thread's own: a socket to look at again in the next drain.
  void list_ready(HandleId handle) {
    unprocessed_.push_back(handle);
    signal_wake();
  }

  // Moves the thread's results into the socket's operations. With the worker's lock held.
  // Connections it accepted are appended to `accepted`: adopting them moves the handle table, so
  // the caller does that once the lock (and its reference to `s`) is done with.
  // A connection taken while nobody wants one (an accept_stop just before) stays with the thread
  // until an accept or the stream does, or the listener closes (`closing`).
  void take_results(HandleId handle, Socket& s, std::vector<int>& accepted, bool closing) {
    Worker& w = *s.worker;
    w.listed = false;
    if (w.connect_done) {
      w.connect_done = w.connect_requested = false;
      s.connect_held = false;
      int32_t op_id = std::exchange(s.connect_op, -1);
      outbox_.post({handle, EventKind::kCompleted, w.connect_result, op_id});
    }
    if (w.read_done) {
      w.read_done = w.read_requested = false;
      s.reads_held = 0;
      s.complete_read(handle, w.read_result, outbox_);
    }
    if (w.write_requested && (w.write_done || w.write_sent > 0)) {
      if (w.write_result < 0) {
        s.fail_writes(handle, w.write_result, outbox_);
      } else {
        // Completes the write when all went out, else records the prefix the peer has.
        s.account_sent(handle, 1, std::exchange(w.write_sent, 0), outbox_);
      }
      if (w.write_done) {
        w.write_done = w.write_requested = false;
        w.write_result = 0;
        s.writes_held = 0;
      }
    }
    if (w.accept_done && (closing || !s.accepts.empty() || s.streaming_accept)) {
      w.accept_done = w.accept_requested = false;
      s.accepts_held = 0;
      accepted.push_back(w.accept_result);
    }
    if (w.stream_done && s.streaming_read) take_stream(handle, s, w);
    if (w.readable_seen) {
      w.readable_seen = false;
      if (has(s.watched, Interest::kReadable)) {
        outbox_.post({handle, EventKind::kReadable, 0, 0});
        s.reported |= Interest::kReadable;
        rearm_.push_back(handle);
      }
    }
    if (w.writable_seen) {
      w.writable_seen = false;
      // A write queued since the thread was asked: held back, and asked again by hand_over once
      // the queue drains.
      if (has(s.watched, Interest::kWritable) && s.reactor_writable()) {
        outbox_.post({handle, EventKind::kWritable, 0, 0});
        s.reported |= Interest::kWritable;
        rearm_.push_back(handle);
      }
    }
  }

  // Copies what the thread streamed into the batch arena, as far as it has room.
  void take_stream(HandleId handle, Socket& s, Worker& w) {
    BatchSink* sink = outbox_.sink();
    if (w.stream_result <= 0) {
      outbox_.post({handle, EventKind::kData, w.stream_result, 0});
      s.streaming_read = false;  // after EOF or an error there is nothing more to stream
      w.stream_done = w.stream_read = false;
      return;
    }
    if (sink == nullptr) return;  // outside a drain: the next one takes it
    size_t left = static_cast<size_t>(w.stream_result) - w.stream_taken;
    std::span<uint8_t> space = sink->arena_space(left);
    if (space.empty()) return;  // the batch is full of data: the next drain takes the rest
    std::memcpy(space.data(), w.stream_buffer.get() + w.stream_taken, space.size());
    int32_t offset = sink->commit_arena(space.size());
    outbox_.post({handle, EventKind::kData, static_cast<int32_t>(space.size()), offset});
    w.stream_taken += space.size();
    if (w.stream_taken == static_cast<size_t>(w.stream_result)) w.stream_done = false;
  }

  // Takes back from the thread the operation of the kind cancel() found held, if take_results
  // did not just finish it, and settles it by core's rules. With the worker's lock held.
  void recall(HandleId handle, Socket& s, CancelOutcome outcome) {
    Worker& w = *s.worker;
    switch (outcome) {
      case CancelOutcome::kRecallConnect:
        if (!s.connect_held) return;
        w.connect_requested = s.connect_held = false;
        outbox_.post({handle, EventKind::kCompleted, kECANCELED, std::exchange(s.connect_op, -1)});
        return;
      case CancelOutcome::kRecallRead:
        if (s.reads_held == 0) return;
        w.read_requested = false;
        s.reads_held = 0;
        s.complete_read(handle, kECANCELED, outbox_);
        return;
      case CancelOutcome::kRecallWrite:
        // take_results accounted what went out: settling withdraws it, or tears the stream.
        if (s.writes_held > 0) {
          w.write_requested = false;
          w.write_from = {};
          s.writes_held = 0;
        }
        s.settle_cancelled_writes(handle, outbox_);
        return;
      case CancelOutcome::kRecallAccept:
        if (s.accepts_held == 0) return;
        if (!s.streaming_accept) w.accept_requested = false;  // else the stream keeps the wait
        s.accepts_held = 0;
        return;
      default:
        return;
    }
  }

  // A connection the listener's thread (or a recalled accept) took: adopted, then handed to the
  // oldest accept still wanted, else to the stream.
  void deliver_accepted(HandleId listener_handle, int fd) {
    int result = fd < 0 ? fd : adopt(UniqueFd(fd), false);
    Socket* listener = sockets_.find(listener_handle);
    if (listener == nullptr) {
      if (result >= 0) close(result, false);
      return;
    }
    int32_t op_id = listener->take_accept(false);
    if (op_id >= 0) {
      outbox_.post({listener_handle, EventKind::kCompleted, result, op_id});
    } else if (listener->streaming_accept) {
      outbox_.post({listener_handle, EventKind::kAccepted, result, 0});
      // Out of descriptors or threads: stop, JavaScript decides when to try again.
      if (result < 0) listener->streaming_accept = false;
    } else if (result >= 0) {
      close(result, false);  // every accept was cancelled after the thread took it: never happens
    }
  }

  void process(HandleId handle) {
    Socket* s = sockets_.find(handle);
    if (s == nullptr) return;  // closed since it was listed
    std::vector<int>& accepted = accepted_;
    accepted.clear();
    bool stream_left;
    {
      std::lock_guard lock(s->worker->mutex);
      take_results(handle, *s, accepted, false);
      stream_left = s->worker->stream_done && s->streaming_read;
    }
    for (int fd : accepted) deliver_accepted(handle, fd);
    s = sockets_.find(handle);
    if (s == nullptr) return;
    hand_over(handle, *s);
    if (stream_left) list_ready(handle);
  }

  // Tells the thread what the socket's queues and flags now want of it; the signal that makes a
  // waiting thread look goes out in flush().
  void hand_over(HandleId handle, Socket& s) {
    Worker& w = *s.worker;
    std::lock_guard lock(w.mutex);
    if (s.connect_op >= 0 && !s.connect_held) {
      s.connect_held = true;
      w.connect_requested = true;
    }
    if (!s.reads.empty() && s.reads_held == 0 && !w.read_requested) {
      s.reads_held = 1;
      w.read_into = s.reads.front().buffer;
      w.read_requested = true;
    }
    if (!s.writes.empty() && s.writes_held == 0 && !w.write_requested && s.connect_op < 0) {
      s.writes_held = 1;
      w.write_from = s.writes.front().rest;
      w.write_sent = 0;
      w.write_result = 0;
      w.write_requested = true;
    }
    bool want_accept = !s.accepts.empty() || s.streaming_accept;
    if (!w.accept_done) w.accept_requested = want_accept;
    if (want_accept && w.accept_done) list_ready(handle);  // the connection the thread kept
    // The thread's accept (or the connection it keeps) goes to a queued accept first.
    s.accepts_held = (w.accept_requested || w.accept_done) && !s.accepts.empty() ? 1 : 0;
    w.stream_read = s.streaming_read;
    Interest ask = s.watched & ~s.reported;
    // Not while writes are queued: try_write would refuse, and the thread would report a
    // writable socket over and over until they are done. process() hands over again then.
    if (!s.reactor_writable()) ask &= ~Interest::kWritable;
    w.watch_readable = has(ask, Interest::kReadable);
    w.watch_writable = has(ask, Interest::kWritable);
    // A waiting thread looks again only when what it should wait for differs from what it waits
    // for (new requests, or results the loop has just taken).
    if (w.waiting && !w.poked && w.wanted_events() != w.waiting_for) {
      w.poked = true;
      to_poke_.push_back(handle);
    }
  }

  void arm_timer() {
    if (timers_.empty()) return;
    uint64_t deadline = timers_.earliest();
    {
      std::lock_guard lock(timer_mutex_);
      if (timer_deadline_ != 0 && timer_deadline_ <= deadline) return;
      timer_deadline_ = deadline;
    }
    if (!timer_thread_.joinable()) {
      timer_thread_ = std::thread([this] { run_timers(); });
    } else {
      timer_changed_.notify_one();
    }
  }

  // The timer thread: sleeps until the earliest deadline, then wakes the loop, which fires them.
  void run_timers() {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, nullptr);
    std::unique_lock lock(timer_mutex_);
    while (!timer_stop_) {
      if (timer_deadline_ == 0) {
        timer_changed_.wait(lock);
        continue;
      }
      uint64_t now = monotonic_now_ns();
      if (now < timer_deadline_) {
        timer_changed_.wait_for(lock, std::chrono::nanoseconds(timer_deadline_ - now));
        continue;
      }
      timer_deadline_ = 0;
      timers_due_.store(true, std::memory_order_release);
      write_wake();
    }
  }

  void fire_timers() {
    if (!timers_due_.exchange(false, std::memory_order_acquire)) return;
    timers_.pop_expired(monotonic_now_ns(), [&](int32_t op_id) { outbox_.post({-1, EventKind::kCompleted, 0, op_id}); });
    arm_timer();
  }

  // The loop thread's wake, coalesced until the next drain reads it.
  void signal_wake() {
    if (wake_pending_) return;
    wake_pending_ = true;
    ++stats_.syscalls;
    write_wake();
  }
  static void wake_from_loop(void* self) { static_cast<ThreadsBackend*>(self)->signal_wake(); }
  static void wake_from_thread(void* self) { static_cast<ThreadsBackend*>(self)->write_wake(); }

  // Safe from any thread.
  void write_wake() {
#ifdef __linux__
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_write(), &one, sizeof(one));
#else
    char one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_write(), &one, 1);
#endif
  }

  void consume_wake() {
    wake_pending_ = false;
    ++stats_.syscalls;
#ifdef __linux__
    uint64_t count;
    [[maybe_unused]] ssize_t n = ::read(wake_read.get(), &count, sizeof(count));
#else
    char bytes[256];
    while (::read(wake_read.get(), bytes, sizeof(bytes)) == static_cast<ssize_t>(sizeof(bytes))) {
    }
#endif
  }

  BackendInfo info_;
  EventOutbox outbox_;
  HandleTable<Socket> sockets_;
  Stats stats_;
  bool wake_pending_ = false;
  std::atomic<uint64_t> thread_syscalls_{0};

  std::mutex ready_mutex_;
  std::vector<HandleId> ready_;        // sockets whose thread has news (under ready_mutex_)
  std::vector<HandleId> unprocessed_;  // the loop's: listed, not yet looked at (a full batch)
  std::vector<HandleId> to_poke_;      // threads to signal in flush()
  std::vector<HandleId> rearm_;        // watched sockets whose readiness was reported
  std::vector<int> accepted_;

  TimerHeap timers_;  // the loop thread's
  std::mutex timer_mutex_;
  std::condition_variable timer_changed_;
  uint64_t timer_deadline_ = 0;  // what the timer thread sleeps until; 0: nothing
  bool timer_stop_ = false;
  std::atomic<bool> timers_due_{false};
  std::thread timer_thread_;

  friend class PooledFileOperations<ThreadsBackend>;
  PooledFiles files_;  // last: its workers stop before anything else here goes
};

std::unique_ptr<Backend> make_threads_backend(int& error, std::string& reason) {
#ifdef __linux__
  UniqueFd wake(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!wake) {
    error = -errno;
    reason = "eventfd failed";
    return nullptr;
  }
  return std::make_unique<ThreadsBackend>(std::move(wake), UniqueFd(), "eventfd-wake");
#else
  int fds[2];
  if (::pipe(fds) != 0) {
    error = -errno;
    reason = "pipe failed";
    return nullptr;
  }
  UniqueFd read_end(fds[0]), write_end(fds[1]);
  for (int fd : fds) {
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
  }
  return std::make_unique<ThreadsBackend>(std::move(read_end), std::move(write_end), "pipe-wake");
#endif
}

// Below every other backend: `auto` never picks it.
const BackendRegistration kRegistration({"threads", make_threads_backend, 0});

}  // namespace
}  // namespace twinloop
