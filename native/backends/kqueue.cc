// The reactor on macOS and FreeBSD: kevent readiness, then the non-blocking syscall.
//
// Level-triggered (no EV_CLEAR on sockets), like the epoll backend: the Reactor API promises that
// a watched socket which stays readable is reported again, and the emulated proactor relies on it
// too — whatever a drain leaves undone (a full batch, a full arena, the accept cap) is simply
// returned again by the next kevent(). With EV_CLEAR each of those places would need its own
// bookkeeping to re-arm, and a missed one is a connection that hangs for ever.
//
// Interest changes are never a syscall of their own. kevent() takes a changelist and an eventlist
// in one call, so every EV_ADD/EV_DISABLE made while JavaScript handles a batch is queued in
// `changes_` and submitted by the flush() the binding makes after that batch (or by the next
// kevent() of a drain): one kevent() per batch, however many sockets changed. As on epoll, the
// filters are widened at once and narrowed lazily, when an event nobody waits for arrives; with
// kqueue, EVFILT_READ and EVFILT_WRITE are separate knotes, so each is narrowed on its own.
//
// The proactor API is emulated as on epoll: a submitted operation waits in the socket's queue
// until kevent() says the socket is ready, then the syscall runs and the completion is reported.
#include <sys/types.h>
#include <sys/event.h>
#include <sys/time.h>
#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <utility>
#include <vector>

#include "../core/event_queue.h"
#include "../core/handle_table.h"
#include "../core/timer_heap.h"
#include "monotonic_clock.h"
#include "pooled_files.h"
#include "posix_socket.h"

namespace twinloop {
namespace {

constexpr int kMaxKevents = 256;
constexpr size_t kMaxStreamRead = 64 * 1024;
constexpr int kMaxAcceptsPerWake = 64;  // so one busy listener cannot monopolise a drain
constexpr uintptr_t kWakeIdent = 0;     // EVFILT_USER idents are their own namespace, not fds
constexpr timespec kNoWait{0, 0};

constexpr uint32_t kReadBit = static_cast<uint32_t>(Interest::kReadable);
constexpr uint32_t kWriteBit = static_cast<uint32_t>(Interest::kWritable);

// A kevent carries the HandleId in udata; the wake event carries a value no handle can have.
void* to_udata(intptr_t value) { return reinterpret_cast<void*>(value); }
intptr_t from_udata(void* udata) { return reinterpret_cast<intptr_t>(udata); }
constexpr intptr_t kWakeUdata = -1;
// The one EVFILT_TIMER of the loop, armed to the earliest deadline of the timer heap (see
// core/timer_heap.h). Its ident lives in EVFILT_TIMER's own namespace, not the descriptors'.
constexpr uintptr_t kTimerIdent = 1;
constexpr intptr_t kTimerUdata = -2;

struct PendingRead {
  std::span<uint8_t> buffer;
  int32_t op_id;
};

struct PendingWrite {
  std::span<const uint8_t> buffer;  // what is left to send
  int32_t op_id;
  size_t sent = 0;                  // > 0: the peer has a prefix, cancelling would tear the stream
};

// Per-socket state: the epoll backend's Socket plus the knote bits and the EV_EOF error, 104
// bytes and the queues, which allocate only once an operation has to wait.
struct Socket {
  UniqueFd fd;
  uint32_t watched = 0;         // reactor interest (Interest bits)
  uint32_t registered = 0;      // Interest bits whose filter is enabled (submitted or queued)
  uint32_t added = 0;           // Interest bits whose knote exists, enabled or not
  bool listener = false;
  bool streaming_read = false;  // read_start
  bool streaming_accept = false;
  int32_t connect_op = -1;      // >= 0 while a connect is in progress
  // kqueue(2): EVFILT_READ on a socket whose read direction has shut down sets EV_EOF and returns
  // the socket error, if any, in fflags. Once something else has consumed so_error (a send that
  // failed, getsockopt(SO_ERROR)), recv() reports a plain EOF; a reset must still be ECONNRESET
  // to the reader, so the error is kept here and returned by the read that would see EOF.
  int32_t eof_error = 0;
  bool write_torn = false;      // a write was cancelled half-sent: no later byte may follow it
  std::vector<PendingRead> reads;
  std::vector<PendingWrite> writes;
  std::vector<int32_t> accepts;
};

class KqueueBackend final : public Backend {
 public:
  KqueueBackend(UniqueFd kqueue_fd, UniqueFd wake_read, UniqueFd wake_write)
      : kqueue_fd_(std::move(kqueue_fd)), wake_read_(std::move(wake_read)), wake_write_(std::move(wake_write)) {
#ifdef EVFILT_USER
    info_ = {"kqueue", "reactor", {"level-triggered", "changelist-batching", "evfilt-user-wake"}};
#else
    info_ = {"kqueue", "reactor", {"level-triggered", "changelist-batching", "pipe-wake"}};
#endif
    changes_.reserve(kMaxKevents);
  }

  const BackendInfo& info() const override { return info_; }
  // kqueue(2): a kqueue descriptor can itself be watched for readability (poll, select, or
  // EVFILT_READ in libuv's own kqueue), and is readable while events are pending.
  int poll_fd() const override { return kqueue_fd_.get(); }

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
    // No EV_DELETE: kqueue(2) says closing a descriptor removes every kevent that references it.
    // Changes still queued for it must go, though: after close() the number is free, and the
    // next socket to get it would be registered with this handle's udata.
    int fd = s->fd.get();
    std::erase_if(changes_, [fd](const struct kevent& change) {
      return change.ident == static_cast<uintptr_t>(fd) && from_udata(change.udata) != kWakeUdata &&
             change.filter != EVFILT_TIMER;
    });
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
    return read_some(*s, buffer);
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
      // Speculative send: a socket with room takes the bytes now, saving a wait for EVFILT_WRITE.
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

  // Timers and cancellation, as on epoll: a queued operation never reached the kernel, so
  // cancelling it is taking it off the socket's queue; its -ECANCELED goes through the deferred
  // queue like every completion made outside a drain.
  int cancel(HandleId handle, int32_t op_id) override {
    if (handle == -1) {
      if (!timers_.cancel(op_id)) return -ENOENT;
      // The EVFILT_TIMER stays armed: firing once for nothing costs less than a change per
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
    defer({handle, EventKind::kCompleted, static_cast<int32_t>(std::min<size_t>(write->sent, INT32_MAX)), op_id});
    for (auto later = write + 1; later != s->writes.end(); ++later) defer({handle, EventKind::kCompleted, -ECANCELED, later->op_id});
    s->writes.clear();
    s->write_torn = true;
    return 0;
  }

  int start_timer(uint64_t delay_ms, int32_t op_id) override {
    if (!timers_.push(deadline_after_ms(delay_ms), op_id)) return -EEXIST;
    arm_timer();
    return 0;
  }

  void drain(BatchSink& sink) override {
    in_drain_ = true;
    collect_files();
    deferred_.drain_into(sink);
    while (!sink.full()) {
      // kqueue(2): a change that fails is returned as an EV_ERROR event only while the eventlist
      // has room for it; otherwise kevent() fails and the changes after it are not applied. A
      // changelist longer than the eventlist therefore goes through flush(), which makes room.
      if (changes_.size() > static_cast<size_t>(kMaxKevents)) flush();
      struct kevent ready[kMaxKevents];
      ++stats_.syscalls;
      int n = kevent(kqueue_fd_.get(), changes_.data(), static_cast<int>(changes_.size()), ready, kMaxKevents, &kNoWait);
      changes_.clear();
      if (n <= 0) break;
      for (int i = 0; i < n; ++i) dispatch(ready[i], sink);
      if (n < kMaxKevents) break;
    }
    in_drain_ = false;
    if (!deferred_.empty()) signal_wake();
  }

  // Submits the queued changes in one kevent(). EV_RECEIPT on each makes the kernel answer every
  // change in the eventlist instead of also collecting ready events, which flush() could not
  // deliver; an eventlist as long as the changelist means no change can be left unapplied.
  void flush() override {
    files_.flush();
    if (changes_.empty()) return;
    std::vector<struct kevent> changes;
    changes.swap(changes_);  // errors handled below may queue new changes
    for (auto& change : changes) change.flags |= EV_RECEIPT;
    receipts_.resize(changes.size());
    ++stats_.syscalls;
    int n = kevent(kqueue_fd_.get(), changes.data(), static_cast<int>(changes.size()), receipts_.data(),
                   static_cast<int>(receipts_.size()), &kNoWait);
    for (int i = 0; i < n; ++i) {
      const struct kevent& receipt = receipts_[static_cast<size_t>(i)];
      if ((receipt.flags & EV_ERROR) && receipt.data != 0) on_change_error(receipt);
    }
    changes.clear();
    if (changes_.empty()) changes_.swap(changes);  // keep the grown buffer: no allocation per batch
  }

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
  // Thread-pool workers wake the loop themselves: kevent(2) and write(2) are safe from any thread,
  // while the changelist is the loop thread's alone.
  static void wake_from_pool(void* context) {
    auto* self = static_cast<KqueueBackend*>(context);
#ifdef EVFILT_USER
    struct kevent trigger{};
    EV_SET(&trigger, kWakeIdent, EVFILT_USER, 0, NOTE_TRIGGER, 0, to_udata(kWakeUdata));
    kevent(self->kqueue_fd_.get(), &trigger, 1, nullptr, 0, nullptr);
#else
    uint8_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(self->wake_write_.get(), &one, sizeof(one));
#endif
  }

  void collect_files() {
    finished_files_.clear();
    files_.collect(finished_files_);
    for (const Event& event : finished_files_) {
      ++stats_.events;
      deferred_.push(event);
    }
  }

#ifdef EVFILT_USER
  static constexpr int16_t kWakeFilter = EVFILT_USER;
#else
  static constexpr int16_t kWakeFilter = EVFILT_READ;
#endif

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

  static uint32_t wanted_filters(const Socket& s) {
    uint32_t want = 0;
    if ((s.watched & kReadBit) || s.streaming_read || s.streaming_accept || !s.reads.empty() || !s.accepts.empty()) {
      want |= kReadBit;
    }
    if ((s.watched & kWriteBit) || !s.writes.empty() || s.connect_op >= 0) want |= kWriteBit;
    return want;
  }

  void queue_change(int fd, int16_t filter, uint16_t flags, HandleId handle) {
    struct kevent change{};
    EV_SET(&change, static_cast<uintptr_t>(fd), filter, flags, 0, 0, to_udata(handle));
    changes_.push_back(change);
  }

  // Widening happens at once; a filter is narrowed only when `narrow` names it, i.e. when one of
  // its events arrived that nobody waits for any more. A proactor read that completes is usually
  // followed by the next read within the same batch, and toggling the filter per read would
  // put two changes per message into every kevent(). EV_DISABLE rather than EV_DELETE keeps the
  // knote, so enabling it again (a write that has to wait, again) is a bare EV_ENABLE: no new
  // knote, no filter attach in the kernel. EV_ADD is sent once per knote.
  int update_interest(HandleId handle, Socket& s, uint32_t narrow = 0) {
    uint32_t want = wanted_filters(s);
    uint32_t enable = want & ~s.registered;
    uint32_t disable = s.registered & ~want & narrow;
    if ((enable | disable) == 0) return 0;
    int fd = s.fd.get();
    for (auto [bit, filter] : {std::pair{kReadBit, EVFILT_READ}, std::pair{kWriteBit, EVFILT_WRITE}}) {
      if (enable & bit) queue_change(fd, static_cast<int16_t>(filter), (s.added & bit) ? EV_ENABLE : EV_ADD, handle);
      if (disable & bit) queue_change(fd, static_cast<int16_t>(filter), EV_DISABLE, handle);
    }
    s.added |= enable;
    s.registered = (s.registered | enable) & ~disable;
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

  // Deferred events have no kernel readiness behind them; triggering the user event makes the
  // kqueue readable so that Node's loop comes back for them. The trigger rides in the changelist
  // like any other change: the binding flushes after every batch and before Node's loop blocks.
  void signal_wake() {
    if (wake_pending_) return;
#ifdef EVFILT_USER
    struct kevent trigger{};
    EV_SET(&trigger, kWakeIdent, EVFILT_USER, 0, NOTE_TRIGGER, 0, to_udata(kWakeUdata));
    changes_.push_back(trigger);
    wake_pending_ = true;
#else
    uint8_t one = 1;
    ++stats_.syscalls;
    if (::write(wake_write_.get(), &one, sizeof(one)) == sizeof(one)) wake_pending_ = true;
#endif
  }

  void on_wake(BatchSink& sink) {
#ifndef EVFILT_USER
    uint8_t bytes[64];
    ++stats_.syscalls;
    while (::read(wake_read_.get(), bytes, sizeof(bytes)) == static_cast<ssize_t>(sizeof(bytes))) ++stats_.syscalls;
#endif
    // EV_CLEAR on the user event: retrieving it reset it, so the next trigger wakes the loop again.
    wake_pending_ = false;
    collect_files();
    deferred_.drain_into(sink);
  }

  int accept_one(int listen_fd) {
    ++stats_.syscalls;
    int fd = accept_connection(listen_fd);
    if (fd < 0) return fd;
    Socket socket;
    socket.fd.reset(fd);
    return insert(std::move(socket));
  }

  // recv(), with the error an EV_EOF carried in place of the EOF it would otherwise report.
  int read_some(Socket& s, std::span<uint8_t> buffer) {
    ++stats_.syscalls;
    int n = recv_some(s.fd.get(), buffer);
    if (n == 0 && s.eof_error != 0) return std::exchange(s.eof_error, 0);
    if (n < 0 && n != -EAGAIN) s.eof_error = 0;  // the kernel reported it itself
    return n;
  }

  void dispatch(const struct kevent& ready, BatchSink& sink) {
    intptr_t tag = from_udata(ready.udata);
    if (tag == kWakeUdata && ready.filter == kWakeFilter) {
      on_wake(sink);
      return;
    }
    if (ready.filter == EVFILT_TIMER) {
      if (!(ready.flags & EV_ERROR)) on_timer(sink);
      return;
    }
    auto handle = static_cast<HandleId>(tag);
    Socket* s = sockets_.find(handle);
    if (!s) return;  // closed earlier in this batch
    if (ready.flags & EV_ERROR) {
      if (ready.data != 0) on_change_error(ready);
      return;
    }
    if (ready.filter == EVFILT_READ) {
      if ((ready.flags & EV_EOF) && ready.fflags != 0 && !s->listener) s->eof_error = -static_cast<int32_t>(ready.fflags);
      on_readable(handle, *s, sink);
      s = sockets_.find(handle);  // accepting may have moved it
      update_interest(handle, *s, kReadBit);
    } else if (ready.filter == EVFILT_WRITE) {
      on_writable(handle, *s, sink, ready);
      update_interest(handle, *s, kWriteBit);
    }
  }

  // A change the kernel refused leaves its filter unarmed, so nothing would ever wake what waits
  // on it: the operations waiting in that direction fail with the error, and reactor watchers
  // are called so that their try_* sees the socket's real state.
  void on_change_error(const struct kevent& receipt) {
    auto handle = static_cast<HandleId>(from_udata(receipt.udata));
    Socket* s = sockets_.find(handle);
    // ENOENT: an EV_DISABLE whose knote was never added, because that EV_ADD failed (already
    // reported) — nothing waits on it.
    if (!s || receipt.data == ENOENT) return;
    int error = -static_cast<int>(receipt.data);
    if (receipt.filter == EVFILT_READ) {
      s->registered &= ~kReadBit;
      s->added &= ~kReadBit;
      for (const auto& read : s->reads) defer({handle, EventKind::kCompleted, error, read.op_id});
      for (int32_t op : s->accepts) defer({handle, EventKind::kCompleted, error, op});
      s->reads.clear();
      s->accepts.clear();
      if (s->streaming_read) defer({handle, EventKind::kData, error, 0});
      if (s->streaming_accept) defer({handle, EventKind::kAccepted, error, 0});
      s->streaming_read = s->streaming_accept = false;
      if (s->watched & kReadBit) defer({handle, EventKind::kReadable, 0, 0});
    } else if (receipt.filter == EVFILT_WRITE) {
      s->registered &= ~kWriteBit;
      s->added &= ~kWriteBit;
      if (s->connect_op >= 0) defer({handle, EventKind::kCompleted, error, std::exchange(s->connect_op, -1)});
      for (const auto& write : s->writes) defer({handle, EventKind::kCompleted, error, write.op_id});
      s->writes.clear();
      if (s->watched & kWriteBit) defer({handle, EventKind::kWritable, 0, 0});
    }
  }

  void on_readable(HandleId handle, Socket& s, BatchSink& sink) {
    if (s.listener) {
      on_listener_readable(handle, sink);
      return;
    }
    if (!s.reads.empty()) {
      PendingRead read = s.reads.front();
      int n = read_some(s, read.buffer);
      if (n != -EAGAIN) {
        s.reads.erase(s.reads.begin());
        emit(sink, {handle, EventKind::kCompleted, n, read.op_id});
      }
    } else if (s.streaming_read) {
      std::span<uint8_t> space = sink.arena_space(kMaxStreamRead);
      if (!space.empty()) {  // else the batch is full of data: the next kevent() reports it again
        int n = read_some(s, space);
        if (n != -EAGAIN) {
          int32_t offset = n > 0 ? sink.commit_arena(static_cast<size_t>(n)) : 0;
          // After EOF or an error the socket stays readable for ever: stop streaming it.
          if (n <= 0) s.streaming_read = false;
          emit(sink, {handle, EventKind::kData, n, offset});
        }
      }
    }
    if (s.watched & kReadBit) emit(sink, {handle, EventKind::kReadable, 0, 0});
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
    if (listener->watched & kReadBit) emit(sink, {handle, EventKind::kReadable, 0, 0});
  }

  void on_writable(HandleId handle, Socket& s, BatchSink& sink, const struct kevent& ready) {
    if (s.connect_op >= 0) {
      ++stats_.syscalls;
      int result = pending_socket_error(s.fd.get());
      // A refused connect is EVFILT_WRITE with EV_EOF and the error in fflags; SO_ERROR says the
      // same unless something consumed it first.
      if (result == 0 && (ready.flags & EV_EOF) && ready.fflags != 0) result = -static_cast<int>(ready.fflags);
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
    if (s.watched & kWriteBit) emit(sink, {handle, EventKind::kWritable, 0, 0});
  }

  // Queues (re)arming the one-shot EVFILT_TIMER to the earliest deadline, unless it is already set
  // to go off no later. It rides in the changelist: arming costs no syscall of its own. Its unit
  // is milliseconds, rounded up so that it never fires before the deadline.
  void arm_timer() {
    if (timers_.empty() || (armed_deadline_ != 0 && armed_deadline_ <= timers_.earliest())) return;
    uint64_t deadline = timers_.earliest();
    uint64_t now = monotonic_now_ns();
    int64_t delay_ms = deadline > now ? static_cast<int64_t>((deadline - now + 999'999u) / 1'000'000u) : 0;
    struct kevent change{};
    EV_SET(&change, kTimerIdent, EVFILT_TIMER, EV_ADD | EV_ONESHOT, 0, delay_ms, to_udata(kTimerUdata));
    changes_.push_back(change);
    armed_deadline_ = deadline;
  }

  void on_timer(BatchSink& sink) {
    armed_deadline_ = 0;
    timers_.pop_expired(monotonic_now_ns(), [&](int32_t op_id) { emit(sink, {-1, EventKind::kCompleted, 0, op_id}); });
    arm_timer();
  }

  UniqueFd kqueue_fd_;
  UniqueFd wake_read_;   // the self-pipe, only where EVFILT_USER is missing
  UniqueFd wake_write_;
  BackendInfo info_;
  HandleTable<Socket> sockets_;
  EventQueue deferred_;
  std::vector<struct kevent> changes_;   // the changelist of the next kevent()
  std::vector<struct kevent> receipts_;  // flush()'s eventlist, grown once
  Stats stats_;
  bool wake_pending_ = false;
  bool in_drain_ = false;
  TimerHeap timers_;
  uint64_t armed_deadline_ = 0;  // what the EVFILT_TIMER is set to; 0 = not armed (or fired)
  std::vector<Event> finished_files_;
  PooledFiles files_{wake_from_pool, this};  // last: its workers stop before the kqueue closes
};

std::unique_ptr<Backend> make_kqueue_backend(int& error, std::string& reason) {
  // No FD_CLOEXEC needed: kqueue(2) descriptors are not inherited by a child created with fork().
  UniqueFd kqueue_fd(kqueue());
  if (!kqueue_fd) {
    error = -errno;
    reason = "kqueue failed";
    return nullptr;
  }
  UniqueFd wake_read;
  UniqueFd wake_write;
  struct kevent wake{};
#ifdef EVFILT_USER
  EV_SET(&wake, kWakeIdent, EVFILT_USER, EV_ADD | EV_CLEAR, 0, 0, to_udata(kWakeUdata));
#else
  int fds[2];
  if (::pipe(fds) != 0) {
    error = -errno;
    reason = "pipe failed";
    return nullptr;
  }
  wake_read.reset(fds[0]);
  wake_write.reset(fds[1]);
  for (int fd : fds) {
    if (fcntl(fd, F_SETFL, O_NONBLOCK) != 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
      error = -errno;
      reason = "fcntl failed";
      return nullptr;
    }
  }
  EV_SET(&wake, static_cast<uintptr_t>(fds[0]), EVFILT_READ, EV_ADD, 0, 0, to_udata(kWakeUdata));
#endif
  if (kevent(kqueue_fd.get(), &wake, 1, nullptr, 0, nullptr) != 0) {
    error = -errno;
    reason = "kevent failed to register the wake event";
    return nullptr;
  }
  return std::make_unique<KqueueBackend>(std::move(kqueue_fd), std::move(wake_read), std::move(wake_write));
}

const BackendRegistration kRegistration({"kqueue", make_kqueue_backend, 10});

}  // namespace
}  // namespace twinloop
