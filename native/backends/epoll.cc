// The reactor on Linux: epoll readiness, then the non-blocking syscall.
//
// Level-triggered, with the registered mask changed only when what the socket needs changes (a
// write that had to wait, a paused reader) — an echo server streaming reads with writes that
// complete at once makes no epoll_ctl call per round trip. Level triggering also means anything
// this drain leaves undone (a full batch) is simply reported again by the next epoll_wait.
//
// The proactor API is emulated as Boost.Asio does on Linux: a submitted operation waits in the
// socket's queue until epoll says the socket is ready, then the syscall runs and the completion is
// reported.
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include "../core/event_queue.h"
#include "../core/handle_table.h"
#include "../core/timer_heap.h"
#include "monotonic_clock.h"
#include "pooled_files.h"
#include "posix_socket.h"

namespace twinloop {
namespace {

constexpr int kMaxEpollEvents = 256;
constexpr size_t kMaxStreamRead = 64 * 1024;
constexpr int kMaxAcceptsPerWake = 64;  // so one busy listener cannot monopolise a drain
constexpr uint64_t kWakeToken = ~uint64_t{0};
constexpr uint64_t kTimerToken = ~uint64_t{0} - 1;  // no HandleId is negative

struct PendingRead {
  std::span<uint8_t> buffer;
  int32_t op_id;
};

struct PendingWrite {
  std::span<const uint8_t> buffer;  // what is left to send
  int32_t op_id;
  size_t sent = 0;                  // > 0: the peer has a prefix, cancelling would tear the stream
};

// Per-socket state: 96 bytes plus the queues, which allocate only once an operation has to wait,
// so an idle connection costs its slot and nothing else.
struct Socket {
  UniqueFd fd;
  uint32_t watched = 0;         // reactor interest (Interest bits)
  uint32_t registered = 0;      // the epoll mask the kernel has; 0 = not in the epoll set
  bool listener = false;
  bool streaming_read = false;  // read_start
  bool streaming_accept = false;
  int32_t connect_op = -1;      // >= 0 while a connect is in progress
  bool write_torn = false;      // a write was cancelled half-sent: no later byte may follow it
  std::vector<PendingRead> reads;
  std::vector<PendingWrite> writes;
  std::vector<int32_t> accepts;
};

class EpollBackend final : public Backend {
 public:
  EpollBackend(UniqueFd epoll_fd, UniqueFd wake_fd) : epoll_fd_(std::move(epoll_fd)), wake_fd_(std::move(wake_fd)) {
    info_ = {"epoll", "reactor", {"level-triggered", "lazy-epoll_ctl", "eventfd-wake"}};
  }

  const BackendInfo& info() const override { return info_; }
  int poll_fd() const override { return epoll_fd_.get(); }

  int listen(const SocketAddress& address, const ListenOptions& options) override {
    UniqueFd fd;
    stats_.syscalls += 4;  // socket, setsockopt, bind, listen
    if (int rc = open_listener(address, options, fd); rc < 0) return rc;
    Socket socket;
    socket.fd = std::move(fd);
    socket.listener = true;
    return insert(std::move(socket));
  }

  int connect(const SocketAddress& address, int32_t op_id) override {
    UniqueFd fd;
    stats_.syscalls += 3;
    int rc = start_connect(address, fd);
    if (rc < 0 && rc != -EINPROGRESS) return rc;
    Socket socket;
    socket.fd = std::move(fd);
    HandleId handle = insert(std::move(socket));
    if (handle < 0) return handle;
    if (rc == 0) {
      defer({handle, EventKind::kCompleted, 0, op_id});
    } else {
      Socket* s = sockets_.find(handle);
      s->connect_op = op_id;
      update_interest(handle, *s);
    }
    return handle;
  }

  int shutdown(HandleId handle) override {
    Socket* s = sockets_.find(handle);
    if (!s) return -EBADF;
    ++stats_.syscalls;
    return ::shutdown(s->fd.get(), SHUT_WR) == 0 ? 0 : -errno;
  }

  int close(HandleId handle, bool reset) override {
    Socket* s = sockets_.find(handle);
    if (!s) return -EBADF;
    if (reset) set_reset_on_close(s->fd.get());
    if (s->connect_op >= 0) defer({handle, EventKind::kCompleted, -ECANCELED, s->connect_op});
    for (const auto& read : s->reads) defer({handle, EventKind::kCompleted, -ECANCELED, read.op_id});
    for (const auto& write : s->writes) defer({handle, EventKind::kCompleted, -ECANCELED, write.op_id});
    for (int32_t op : s->accepts) defer({handle, EventKind::kCompleted, -ECANCELED, op});
    // No EPOLL_CTL_DEL: closing the only descriptor of the socket removes it from the epoll set.
    ++stats_.syscalls;
    sockets_.erase(handle);
    return 0;
  }

  int address(HandleId handle, bool peer, SocketAddress& out) override {
    Socket* s = sockets_.find(handle);
    if (!s) return -EBADF;
    return socket_address(s->fd.get(), peer, out);
  }

  int watch(HandleId handle, uint32_t interest) override {
    Socket* s = sockets_.find(handle);
    if (!s) return -EBADF;
    s->watched = interest;
    return update_interest(handle, *s);
  }

  int try_read(HandleId handle, std::span<uint8_t> buffer) override {
    Socket* s = sockets_.find(handle);
    if (!s) return -EBADF;
    ++stats_.syscalls;
    return recv_some(s->fd.get(), buffer);
  }

  int try_write(HandleId handle, std::span<const uint8_t> buffer) override {
    Socket* s = sockets_.find(handle);
    if (!s) return -EBADF;
    ++stats_.syscalls;
    return send_some(s->fd.get(), buffer);
  }

  int try_accept(HandleId handle) override {
    Socket* s = sockets_.find(handle);
    if (!s) return -EBADF;
    if (!s->listener) return -EINVAL;
    return accept_one(s->fd.get());
  }

  int submit_read(HandleId handle, std::span<uint8_t> buffer, int32_t op_id) override {
    Socket* s = sockets_.find(handle);
    if (!s) return -EBADF;
    if (s->streaming_read) return -EBUSY;
    s->reads.push_back({buffer, op_id});
    return update_interest(handle, *s);
  }

  int submit_write(HandleId handle, std::span<const uint8_t> buffer, int32_t op_id) override {
    Socket* s = sockets_.find(handle);
    if (!s) return -EBADF;
    if (s->connect_op >= 0) return -ENOTCONN;
    if (s->write_torn) return -EPIPE;
    size_t size = buffer.size();
    if (s->writes.empty()) {
      // Speculative send: a socket with room takes the bytes now, saving a wait for EPOLLOUT.
      while (!buffer.empty()) {
        ++stats_.syscalls;
        int n = send_some(s->fd.get(), buffer);
        if (n == -EAGAIN) break;
        if (n < 0) return n;
        buffer = buffer.subspan(static_cast<size_t>(n));
      }
      if (buffer.empty()) return 1;
    }
    s->writes.push_back({buffer, op_id, size - buffer.size()});
    int rc = update_interest(handle, *s);
    return rc < 0 ? rc : 0;
  }

  int submit_accept(HandleId handle, int32_t op_id) override {
    Socket* s = sockets_.find(handle);
    if (!s) return -EBADF;
    if (!s->listener) return -EINVAL;
    s->accepts.push_back(op_id);
    return update_interest(handle, *s);
  }

  int read_start(HandleId handle) override { return set_streaming(handle, &Socket::streaming_read, true); }
  int read_stop(HandleId handle) override { return set_streaming(handle, &Socket::streaming_read, false); }
  int accept_start(HandleId handle) override { return set_streaming(handle, &Socket::streaming_accept, true); }
  int accept_stop(HandleId handle) override { return set_streaming(handle, &Socket::streaming_accept, false); }

  // Timers and cancellation. A queued operation never reached the kernel, so cancelling it is
  // taking it off the socket's queue; its -ECANCELED goes through the deferred queue like every
  // completion made outside a drain.
  int cancel(HandleId handle, int32_t op_id) override {
    if (handle == -1) {
      if (!timers_.cancel(op_id)) return -ENOENT;
      // The timerfd stays armed: firing once for nothing costs less than a timerfd_settime per
      // cancel, and per-request timeouts are nearly always cancelled.
      defer({-1, EventKind::kCompleted, -ECANCELED, op_id});
      return 0;
    }
    Socket* s = sockets_.find(handle);
    if (!s) return -EBADF;
    if (s->connect_op == op_id) {
      s->connect_op = -1;
      defer({handle, EventKind::kCompleted, -ECANCELED, op_id});
      return 0;
    }
    auto read = std::find_if(s->reads.begin(), s->reads.end(), [op_id](const PendingRead& r) { return r.op_id == op_id; });
    if (read != s->reads.end()) {
      s->reads.erase(read);
      defer({handle, EventKind::kCompleted, -ECANCELED, op_id});
      return 0;
    }
    auto accept = std::find(s->accepts.begin(), s->accepts.end(), op_id);
    if (accept != s->accepts.end()) {
      s->accepts.erase(accept);
      defer({handle, EventKind::kCompleted, -ECANCELED, op_id});
      return 0;
    }
    auto write = std::find_if(s->writes.begin(), s->writes.end(), [op_id](const PendingWrite& w) { return w.op_id == op_id; });
    if (write == s->writes.end()) return -ENOENT;
    if (write->sent == 0) {
      s->writes.erase(write);
      defer({handle, EventKind::kCompleted, -ECANCELED, op_id});
      return 0;
    }
    // Only the head of the queue can be half-sent: withdrawing the rest of it tears the byte
    // stream (see Backend::cancel), so nothing queued may follow it either.
    defer({handle, EventKind::kCompleted, clamp_count(write->sent), op_id});
    for (auto later = write + 1; later != s->writes.end(); ++later) defer({handle, EventKind::kCompleted, -ECANCELED, later->op_id});
    s->writes.clear();
    s->write_torn = true;
    return 0;
  }

  int start_timer(uint64_t delay_ms, int32_t op_id) override {
    if (!timer_fd_) {
      // Made on first use: a loop without timers spends no descriptor on them.
      UniqueFd fd(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
      if (!fd) return -errno;
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = kTimerToken;
      stats_.syscalls += 2;
      if (epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, fd.get(), &ev) != 0) return -errno;
      timer_fd_ = std::move(fd);
    }
    if (!timers_.push(deadline_after_ms(delay_ms), op_id)) return -EEXIST;
    return arm_timer();
  }

  void drain(BatchSink& sink) override {
    in_drain_ = true;
    collect_files();
    deferred_.drain_into(sink);
    while (!sink.full()) {
      epoll_event ready[kMaxEpollEvents];
      ++stats_.syscalls;
      int n = epoll_wait(epoll_fd_.get(), ready, kMaxEpollEvents, 0);
      if (n <= 0) break;
      for (int i = 0; i < n; ++i) dispatch(ready[i], sink);
      if (n < kMaxEpollEvents) break;
    }
    in_drain_ = false;
    if (!deferred_.empty()) signal_wake();
  }

  void flush() override { files_.flush(); }

  int file_open(const std::string& path, const FileOpenOptions& options, int32_t op_id) override {
    return files_.open(path, options, op_id);
  }
  int file_read(HandleId file, std::span<uint8_t> buffer, int64_t position, int32_t op_id) override {
    return files_.read(file, buffer, position, op_id);
  }
  int file_write(HandleId file, std::span<const uint8_t> buffer, int64_t position, int32_t op_id) override {
    return files_.write(file, buffer, position, op_id);
  }
  int file_sync(HandleId file, bool data_only, int32_t op_id) override { return files_.sync(file, data_only, op_id); }
  int file_close(HandleId file, int32_t op_id) override { return files_.close(file, op_id); }
  void set_thread_pool_size(int threads) override { files_.set_threads(threads); }

  Stats stats() const override {
    Stats stats = stats_;
    stats.syscalls += files_.syscalls();
    return stats;
  }

 private:
  HandleId insert(Socket socket) {
    HandleId handle = sockets_.insert(std::move(socket));
    return handle < 0 ? -EMFILE : handle;
  }

  int set_streaming(HandleId handle, bool Socket::*flag, bool on) {
    Socket* s = sockets_.find(handle);
    if (!s) return -EBADF;
    if ((flag == &Socket::streaming_accept) != s->listener) return -EINVAL;
    s->*flag = on;
    return update_interest(handle, *s);
  }

  static uint32_t wanted_events(const Socket& s) {
    uint32_t want = 0;
    if ((s.watched & static_cast<uint32_t>(Interest::kReadable)) || s.streaming_read || s.streaming_accept ||
        !s.reads.empty() || !s.accepts.empty()) {
      want |= EPOLLIN;
    }
    if ((s.watched & static_cast<uint32_t>(Interest::kWritable)) || !s.writes.empty() || s.connect_op >= 0) {
      want |= EPOLLOUT;
    }
    return want;
  }

  // Widening the mask happens at once. Narrowing waits until an unwanted event actually arrives
  // (`narrow`): a proactor read that completes is usually followed by the next read within the
  // same batch, and the epoll_ctl pair DEL + ADD per read would double the syscalls per message.
  int update_interest(HandleId handle, Socket& s, bool narrow = false) {
    uint32_t want = wanted_events(s);
    if (want == s.registered || (!narrow && (want & ~s.registered) == 0)) return 0;
    epoll_event ev{};
    ev.events = want;
    ev.data.u64 = static_cast<uint64_t>(handle);
    // An empty mask is a DEL, not a MOD: epoll reports EPOLLHUP whatever the mask, and a closed
    // peer would then wake the loop for ever.
    int op = want == 0 ? EPOLL_CTL_DEL : s.registered == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
    ++stats_.syscalls;
    if (epoll_ctl(epoll_fd_.get(), op, s.fd.get(), &ev) != 0) return -errno;
    s.registered = want;
    return 0;
  }

  void emit(BatchSink& sink, const Event& event) {
    ++stats_.events;
    if (sink.full()) {
      defer(event);
    } else {
      sink.push(event);
    }
  }

  void defer(const Event& event) {
    deferred_.push(event);
    if (!in_drain_) signal_wake();
  }

  // Deferred events have no kernel readiness behind them; the eventfd makes the epoll fd readable
  // so that Node's loop comes back for them.
  void signal_wake() {
    if (wake_pending_) return;
    uint64_t one = 1;
    ++stats_.syscalls;
    if (::write(wake_fd_.get(), &one, sizeof(one)) == sizeof(one)) wake_pending_ = true;
  }

  // Thread-pool workers signal the eventfd directly: write(2) is safe from any thread, and the
  // counter coalesces their wakes until the loop reads it.
  static void wake_from_pool(void* self) {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(static_cast<EpollBackend*>(self)->wake_fd_.get(), &one, sizeof(one));
  }

  void collect_files() {
    finished_files_.clear();
    files_.collect(finished_files_);
    for (const Event& event : finished_files_) {
      ++stats_.events;
      deferred_.push(event);
    }
  }

  int accept_one(int listen_fd) {
    ++stats_.syscalls;
    int fd = accept_connection(listen_fd);
    if (fd < 0) return fd;
    Socket socket;
    socket.fd.reset(fd);
    return insert(std::move(socket));
  }

  void dispatch(const epoll_event& ready, BatchSink& sink) {
    if (ready.data.u64 == kTimerToken) {
      on_timer(sink);
      return;
    }
    if (ready.data.u64 == kWakeToken) {
      uint64_t count;
      ++stats_.syscalls;
      if (::read(wake_fd_.get(), &count, sizeof(count)) == sizeof(count)) wake_pending_ = false;
      collect_files();
      deferred_.drain_into(sink);
      return;
    }
    auto handle = static_cast<HandleId>(ready.data.u64);
    Socket* s = sockets_.find(handle);
    if (!s) return;  // closed earlier in this batch
    bool failed = ready.events & (EPOLLERR | EPOLLHUP);
    // Readiness that nobody was waiting for: the moment to narrow the mask (see update_interest).
    // What this dispatch itself completes does not count — the next operation usually follows
    // within the batch.
    uint32_t wanted = wanted_events(*s);
    bool unwanted = (ready.events & (EPOLLIN | EPOLLOUT) & ~wanted) != 0 || (failed && wanted == 0);
    if ((ready.events & EPOLLIN) || failed) on_readable(handle, *s, sink);
    s = sockets_.find(handle);  // accepting may have moved it
    if ((ready.events & EPOLLOUT) || failed) on_writable(handle, *s, sink);
    // Unlike a read, a write that had to wait is rarely followed by another: drop EPOLLOUT now.
    bool writes_done = (ready.events & EPOLLOUT) && !(wanted_events(*s) & EPOLLOUT);
    update_interest(handle, *s, unwanted || writes_done);
  }

  void on_readable(HandleId handle, Socket& s, BatchSink& sink) {
    if (s.listener) {
      on_listener_readable(handle, sink);
      return;
    }
    if (!s.reads.empty()) {
      PendingRead read = s.reads.front();
      ++stats_.syscalls;
      int n = recv_some(s.fd.get(), read.buffer);
      if (n != -EAGAIN) {
        s.reads.erase(s.reads.begin());
        emit(sink, {handle, EventKind::kCompleted, n, read.op_id});
      }
    } else if (s.streaming_read) {
      std::span<uint8_t> space = sink.arena_space(kMaxStreamRead);
      if (!space.empty()) {  // else the batch is full of data: the next epoll_wait reports it again
        ++stats_.syscalls;
        int n = recv_some(s.fd.get(), space);
        if (n != -EAGAIN) {
          int32_t offset = n > 0 ? sink.commit_arena(static_cast<size_t>(n)) : 0;
          // After EOF or an error the socket stays readable for ever: stop streaming it.
          if (n <= 0) s.streaming_read = false;
          emit(sink, {handle, EventKind::kData, n, offset});
        }
      }
    }
    if (s.watched & static_cast<uint32_t>(Interest::kReadable)) emit(sink, {handle, EventKind::kReadable, 0, 0});
  }

  // Accepting inserts into the handle table, which may move every Socket: the listener is looked
  // up again after each accept instead of held by reference.
  void on_listener_readable(HandleId handle, BatchSink& sink) {
    for (int i = 0; i < kMaxAcceptsPerWake; ++i) {
      Socket* listener = sockets_.find(handle);
      if (listener->accepts.empty() && !listener->streaming_accept) break;
      int result = accept_one(listener->fd.get());
      if (result == -EAGAIN) break;
      listener = sockets_.find(handle);
      if (!listener->accepts.empty()) {
        emit(sink, {handle, EventKind::kCompleted, result, listener->accepts.front()});
        listener->accepts.erase(listener->accepts.begin());
      } else {
        emit(sink, {handle, EventKind::kAccepted, result, 0});
        // Out of descriptors (EMFILE) and the like: stop, or level triggering would spin on the
        // pending connection. JavaScript decides when to try again.
        if (result < 0) listener->streaming_accept = false;
      }
      if (result < 0) break;
    }
    Socket* listener = sockets_.find(handle);
    if (listener->watched & static_cast<uint32_t>(Interest::kReadable)) emit(sink, {handle, EventKind::kReadable, 0, 0});
  }

  void on_writable(HandleId handle, Socket& s, BatchSink& sink) {
    if (s.connect_op >= 0) {
      ++stats_.syscalls;
      int result = pending_socket_error(s.fd.get());
      emit(sink, {handle, EventKind::kCompleted, result, s.connect_op});
      s.connect_op = -1;
      return;
    }
    size_t done = 0;
    for (; done < s.writes.size(); ++done) {
      PendingWrite& write = s.writes[done];
      int n = 0;
      while (!write.buffer.empty()) {
        ++stats_.syscalls;
        n = send_some(s.fd.get(), write.buffer);
        if (n < 0) break;
        write.buffer = write.buffer.subspan(static_cast<size_t>(n));
        write.sent += static_cast<size_t>(n);
      }
      if (n == -EAGAIN) break;
      emit(sink, {handle, EventKind::kCompleted, n < 0 ? n : 0, write.op_id});
    }
    s.writes.erase(s.writes.begin(), s.writes.begin() + static_cast<std::ptrdiff_t>(done));
    if (s.watched & static_cast<uint32_t>(Interest::kWritable)) emit(sink, {handle, EventKind::kWritable, 0, 0});
  }

  static int32_t clamp_count(size_t bytes) { return static_cast<int32_t>(std::min<size_t>(bytes, INT32_MAX)); }

  // Arms the timerfd to the earliest deadline unless it is already armed to go off no later. One
  // timerfd for every timer of the loop: see timer_heap.h.
  int arm_timer() {
    if (timers_.empty() || (armed_deadline_ != 0 && armed_deadline_ <= timers_.earliest())) return 0;
    uint64_t deadline = timers_.earliest();
    itimerspec spec{};
    spec.it_value.tv_sec = static_cast<time_t>(deadline / 1'000'000'000u);
    spec.it_value.tv_nsec = static_cast<long>(deadline % 1'000'000'000u);
    if (spec.it_value.tv_sec == 0 && spec.it_value.tv_nsec == 0) spec.it_value.tv_nsec = 1;  // zero disarms
    ++stats_.syscalls;
    if (timerfd_settime(timer_fd_.get(), TFD_TIMER_ABSTIME, &spec, nullptr) != 0) return -errno;
    armed_deadline_ = deadline;
    return 0;
  }

  void on_timer(BatchSink& sink) {
    uint64_t expirations;
    ++stats_.syscalls;
    [[maybe_unused]] ssize_t n = ::read(timer_fd_.get(), &expirations, sizeof(expirations));
    armed_deadline_ = 0;
    timers_.pop_expired(monotonic_now_ns(), [&](int32_t op_id) { emit(sink, {-1, EventKind::kCompleted, 0, op_id}); });
    arm_timer();
  }

  UniqueFd epoll_fd_;
  UniqueFd wake_fd_;
  BackendInfo info_;
  HandleTable<Socket> sockets_;
  EventQueue deferred_;
  Stats stats_;
  bool wake_pending_ = false;
  bool in_drain_ = false;
  UniqueFd timer_fd_;
  TimerHeap timers_;
  uint64_t armed_deadline_ = 0;  // what the timerfd is set to; 0 = disarmed (or already fired)
  std::vector<Event> finished_files_;
  PooledFiles files_{wake_from_pool, this};  // after wake_fd_: its workers stop before the eventfd closes
};

std::unique_ptr<Backend> make_epoll_backend(int& error, std::string& reason) {
  UniqueFd epoll_fd(epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_fd) {
    error = -errno;
    reason = "epoll_create1 failed";
    return nullptr;
  }
  UniqueFd wake_fd(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!wake_fd) {
    error = -errno;
    reason = "eventfd failed";
    return nullptr;
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kWakeToken;
  if (epoll_ctl(epoll_fd.get(), EPOLL_CTL_ADD, wake_fd.get(), &ev) != 0) {
    error = -errno;
    reason = "epoll_ctl failed";
    return nullptr;
  }
  return std::make_unique<EpollBackend>(std::move(epoll_fd), std::move(wake_fd));
}

const BackendRegistration kRegistration({"epoll", make_epoll_backend, 10});

}  // namespace
}  // namespace twinloop
