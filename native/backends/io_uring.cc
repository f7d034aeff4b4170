// The proactor on Linux: io_uring, with the reactor API emulated on multishot poll.
//
// Submissions are prepared lazily. An API call only changes a socket's state and puts it on the
// dirty list; pump() turns the state into SQEs just before an io_uring_enter — at flush() after a
// JavaScript batch, or at the start of drain(). So the 16 writes a handler makes in one batch go
// out as one SENDMSG, and every SQE that names a descriptor is handed to the kernel before
// JavaScript can close that descriptor and let a new socket reuse its number.
//
// Ordering of writes: at most one send is in flight per socket; later writes wait natively and
// leave together as one SENDMSG (up to kMaxIov buffers) when it completes. Linking SENDs instead
// (IOSQE_IO_LINK) cannot continue a short send before the next linked one runs, and a failed link
// cancels the rest of the chain — we would still need this queue to recover.
//
// Lifetime: a closed socket's slot stays allocated (closing = true, invisible to the API, which
// reports EBADF) until the kernel has posted the final CQE of every operation it had in flight,
// so a CQE never finds a reused slot and no kCompleted is emitted while the kernel may still write
// into the caller's buffer. The descriptor itself is closed at once: in-flight operations hold
// their own reference to the file, and are cancelled by user_data.
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "../core/event_queue.h"
#include "../core/handle_table.h"
#include "io_uring_files.h"
#include "io_uring_ring.h"
#include "io_uring_timers.h"
#include "monotonic_clock.h"
#include "posix_socket.h"

namespace twinloop {
namespace {

constexpr unsigned kSqEntries = 1024;
// Multishot operations post many CQEs per SQE; a deep CQ keeps bursts off the overflow list
// (16 B per entry: 128 KiB).
constexpr unsigned kCqEntries = 8192;
// 8 KiB holds a typical request whole while keeping the pool small; see BufferRing for why the
// pool grows on demand (128 buffers = 1 MiB at start, at most 4096 = 32 MiB under load).
constexpr unsigned kBufferSize = 8 * 1024;
constexpr unsigned kMaxBuffers = 4096;
constexpr size_t kMaxIov = 64;
// Accepts of one listener the kernel holds at once. A server posts many (as IOCP servers post many
// AcceptEx) so that a burst is taken in one pass; held one at a time, each accept's CQE queued
// behind a busy loop's whole backlog, and the last ~200 of 10 000 clients waited seconds.
constexpr uint8_t kMaxAcceptsInFlight = 64;
// The kernel runs at most ~20 deferred completions per GETEVENTS enter (IO_LOCAL_TW_DEFAULT_MAX,
// measured here: 100 ready recvs → 20 CQEs per enter); a drain enters again while the kernel says
// more wait (IORING_SQ_TASKRUN), up to this bound so a flood cannot starve Node's loop.
constexpr int kMaxEntersPerDrain = 32;
constexpr unsigned kTaskRunCap = 20;
constexpr uint32_t kReadable = static_cast<uint32_t>(Interest::kReadable);
constexpr uint32_t kWritable = static_cast<uint32_t>(Interest::kWritable);

// One bit per kind of operation; a socket has at most one of each in flight, so user_data =
// kind << 32 | handle names the operation exactly. The exception is kAccept: a listener's accepts
// are interchangeable, so several share one user_data and each CQE goes to the oldest accept()
// waiting (see on_accept).
enum Op : uint8_t {
  kRecv = 1 << 0,         // submit_read into the caller's buffer
  kRecvStream = 1 << 1,   // read_start: multishot recv from the buffer ring
  kSend = 1 << 2,         // the head of the write queue (SEND or SENDMSG)
  kPoll = 1 << 3,         // watch(): multishot POLL_ADD
  kPollCheck = 1 << 4,    // one-shot POLL_ADD that re-checks readiness (level-triggered emulation)
  kConnect = 1 << 5,
  kAccept = 1 << 6,       // submit_accept
  kAcceptStream = 1 << 7, // accept_start: multishot accept
};
constexpr uint64_t kIgnoreKind = 0xff;  // cancels, poll updates: nothing to do with their CQE

uint64_t user_data(Op kind, HandleId handle) { return (uint64_t{kind} << 32) | static_cast<uint32_t>(handle); }

struct PendingRead {
  uint8_t* data;
  uint32_t size;
  int32_t op_id;
};

struct PendingAccept {
  int32_t op_id;
  bool cancelled = false;  // cancelled while the kernel held an accept for it: see cancel()
};

struct PendingWrite {
  const uint8_t* data;
  uint32_t size;
  uint32_t sent;
  int32_t op_id;
  bool cancelled = false;  // cancel() came while the kernel held it: settled at the send's CQE
};

// A send of several queued writes: the kernel reads msghdr and iovecs when it issues the op, so
// they live until its CQE. Pooled by the backend; a socket holds one only while such a send is in
// flight.
struct SendBatch {
  msghdr header{};
  iovec iov[kMaxIov];
};

// Per-socket state: 112 bytes; the vectors allocate only once an operation has to wait, so an idle
// connection costs its slot (and in the kernel, its armed multishot recv) and nothing else.
struct Socket {
  UniqueFd fd;
  uint8_t in_flight = 0;    // Op bits
  uint8_t cancelling = 0;   // Op bits whose cancel SQE is queued
  uint8_t watched = 0;      // Interest bits
  uint8_t recheck = 0;      // Interest bits reported without a sign that the socket went dry
  uint8_t send_count = 0;   // writes the in-flight send carries
  uint8_t accepts_in_flight = 0;  // kAccept operations the kernel holds
  bool listener = false;
  bool streaming_read = false;
  bool streaming_accept = false;
  bool closing = false;
  bool dirty = false;
  bool write_torn = false;  // a write was cancelled half-sent: no later byte may follow it
  int32_t connect_op = -1;
  std::unique_ptr<SockAddrStorage> connect_address;
  std::unique_ptr<SendBatch> send_batch;
  std::vector<PendingRead> reads;
  std::vector<PendingWrite> writes;
  std::vector<PendingAccept> accepts;
};

uint32_t poll_events(uint32_t interest) {
  return ((interest & kReadable) ? POLLIN | POLLRDHUP : 0) | ((interest & kWritable) ? POLLOUT : 0);
}

class IoUringBackend final : public Backend {
 public:
  IoUringBackend() = default;

  int init(std::string& reason, unsigned max_buffers, unsigned cq_entries) {
    if (int rc = ring_.open(std::min(kSqEntries, cq_entries), cq_entries, reason); rc < 0) return rc;
    for (uint8_t op : {IORING_OP_RECV, IORING_OP_SEND, IORING_OP_SENDMSG, IORING_OP_ACCEPT, IORING_OP_CONNECT,
                       IORING_OP_POLL_ADD, IORING_OP_POLL_REMOVE, IORING_OP_ASYNC_CANCEL, IORING_OP_NOP,
                       IORING_OP_TIMEOUT, IORING_OP_TIMEOUT_REMOVE}) {
      if (!ring_.supports(op)) {
        reason = "io_uring lacks the socket opcodes (kernel older than 5.19)";
        return -ENOSYS;
      }
    }
    if (int rc = buffers_.open(ring_, max_buffers, kBufferSize); rc < 0) {
      reason = std::string("no provided-buffer ring (IORING_REGISTER_PBUF_RING, Linux 5.19): ") + std::strerror(-rc);
      return rc;
    }
    // Node's loop watches an eventfd, not the ring fd. With DEFER_TASKRUN a completion that arrives
    // from the network only queues task work: the kernel signals a registered eventfd for it, but
    // does not wake epoll waiters on the ring fd (poll() reports POLLIN when asked, epoll is never
    // told). Seen here: a connect completing in softirq left Node's uv_poll asleep for ever.
    event_fd_.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!event_fd_) {
      reason = std::string("eventfd failed: ") + std::strerror(errno);
      return -errno;
    }
    int event_fd = event_fd_.get();
    if (int rc = ring_.register_op(IORING_REGISTER_EVENTFD, &event_fd, 1); rc < 0) {
      reason = std::string("IORING_REGISTER_EVENTFD failed: ") + std::strerror(-rc);
      return rc;
    }
    const RingFeatures& f = ring_.features();
    info_ = {"io_uring", "proactor", {}};
    auto& list = info_.features;
    if (f.setup_flags & IORING_SETUP_SINGLE_ISSUER) list.push_back("single-issuer");
    if (f.defer_taskrun()) list.push_back("defer-taskrun");
    if (f.setup_flags & IORING_SETUP_COOP_TASKRUN) list.push_back("coop-taskrun");
    if (f.taskrun_flag()) list.push_back("taskrun-flag");
    if (f.setup_flags & IORING_SETUP_SUBMIT_ALL) list.push_back("submit-all");
    if (f.registered_ring_fd) list.push_back("registered-ring-fd");
    if (f.kernel_features & IORING_FEAT_NODROP) list.push_back("cq-nodrop");
    if (f.kernel_features & IORING_FEAT_FAST_POLL) list.push_back("fast-poll");
    list.push_back(f.multishot_accept ? "multishot-accept" : "accept");
    list.push_back(f.multishot_recv ? "multishot-recv" : "recv-buffer-select");
    list.push_back("provided-buffer-ring:" + std::to_string(max_buffers) + "x" + std::to_string(kBufferSize / 1024) +
                   "KiB");
    list.push_back("multishot-poll");
    list.push_back("eventfd-wake");
    ++stats_.syscalls;  // the probe, the registrations: counted as one, they happen once
    return 0;
  }

  ~IoUringBackend() override {
    // The kernel must be done with every buffer before this returns: cancel everything, then wait
    // for the final CQE of each operation (closing the ring fd alone would let the kernel finish
    // them asynchronously, after JavaScript has released the buffers).
    sockets_.for_each([&](HandleId handle, Socket& s) {
      if (!s.closing) close(handle, false);
    });
    timers_.disarm([this] { return sqe(); }, kIgnoreKind << 32);
    for (int waits = 0; in_flight_ops_ + files_.in_flight() > 0 && waits < 100; ++waits) {
      pump_dirty();
      if (ring_.enter(true) < 0 && ring_.pending() > 0) break;
      reap_discarding();
      if (in_flight_ops_ + files_.in_flight() == 0) break;
      wait_for_completion();
    }
  }

  const BackendInfo& info() const override { return info_; }
  int poll_fd() const override { return event_fd_.get(); }

  int listen(const SocketAddress& address, const ListenOptions& options) override {
    UniqueFd fd;
    stats_.syscalls += 4;
    if (int rc = open_listener(address, options, fd); rc < 0) return rc;
    Socket socket;
    socket.fd = std::move(fd);
    socket.listener = true;
    return insert(std::move(socket));
  }

  int connect(const SocketAddress& address, int32_t op_id) override {
    auto storage = std::make_unique<SockAddrStorage>();
    if (int rc = to_sockaddr(address, *storage); rc < 0) return rc;
    ++stats_.syscalls;
    int raw = ::socket(storage->storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (raw < 0) return -errno;
    Socket socket;
    socket.fd.reset(raw);
    if (address.family != SocketAddress::Family::kUnix) {
      ++stats_.syscalls;
      set_no_delay(raw);
    }
    socket.connect_op = op_id;
    socket.connect_address = std::move(storage);
    HandleId handle = insert(std::move(socket));
    if (handle >= 0) mark_dirty(handle, *sockets_.find(handle));
    return handle;
  }

  int shutdown(HandleId handle) override {
    Socket* s = find(handle);
    if (!s) return -EBADF;
    ++stats_.syscalls;
    return ::shutdown(s->fd.get(), SHUT_WR) == 0 ? 0 : -errno;
  }

  int close(HandleId handle, bool reset) override {
    Socket* s = find(handle);
    if (!s) return -EBADF;
    // Defensive: an SQE naming this descriptor must reach the kernel before the number can be
    // reused (pump() submits what it prepares, so this is only a failed enter's leftovers).
    if (ring_.pending() > 0) submit();
    if (s->listener) {
      // Out of LISTEN at once, so that the port can be bound again (SO_REUSEADDR) even though the
      // cancelled accept still holds the socket until its CQE.
      ++stats_.syscalls;
      ::shutdown(s->fd.get(), SHUT_RDWR);
    }
    if (reset) {
      ++stats_.syscalls;
      set_reset_on_close(s->fd.get());
    }
    s->closing = true;
    // Queued operations the kernel never saw are cancelled here; those in flight when their CQE
    // arrives, since until then the kernel may still use their buffers.
    size_t first_queued_read = (s->in_flight & kRecv) ? 1 : 0;
    for (size_t i = first_queued_read; i < s->reads.size(); ++i) defer({handle, EventKind::kCompleted, -ECANCELED, s->reads[i].op_id});
    s->reads.resize(first_queued_read);
    for (size_t i = s->send_count; i < s->writes.size(); ++i) defer({handle, EventKind::kCompleted, -ECANCELED, s->writes[i].op_id});
    s->writes.resize(s->send_count);
    for (size_t i = s->accepts_in_flight; i < s->accepts.size(); ++i) defer({handle, EventKind::kCompleted, -ECANCELED, s->accepts[i].op_id});
    s->accepts.resize(s->accepts_in_flight);
    if (s->connect_op >= 0 && !(s->in_flight & kConnect)) {
      defer({handle, EventKind::kCompleted, -ECANCELED, s->connect_op});
      s->connect_op = -1;
    }
    ++stats_.syscalls;
    s->fd.reset();
    for (uint8_t bit = 1; bit != 0; bit <<= 1) {
      if ((s->in_flight & bit) && !(s->cancelling & bit)) cancel(handle, *s, static_cast<Op>(bit));
    }
    if (s->in_flight == 0) sockets_.erase(handle);
    return 0;
  }

  int address(HandleId handle, bool peer, SocketAddress& out) override {
    Socket* s = find(handle);
    if (!s) return -EBADF;
    ++stats_.syscalls;
    return socket_address(s->fd.get(), peer, out);
  }

  int watch(HandleId handle, uint32_t interest) override {
    Socket* s = find(handle);
    if (!s) return -EBADF;
    auto watched = static_cast<uint8_t>(interest & (kReadable | kWritable));
    s->recheck = (s->recheck | (watched & ~s->watched)) & watched;
    s->watched = watched;
    mark_dirty(handle, *s);
    return 0;
  }

  // The reactor's syscalls. A read or write that comes back short or EAGAIN means the socket went
  // dry while the multishot poll was armed, so the poll reports the next change by itself; any
  // other outcome leaves the readiness re-check (see pump_poll) in place.
  int try_read(HandleId handle, std::span<uint8_t> buffer) override {
    Socket* s = find(handle);
    if (!s) return -EBADF;
    ++stats_.syscalls;
    int n = recv_some(s->fd.get(), buffer);
    if (n == -EAGAIN || (n > 0 && static_cast<size_t>(n) < buffer.size())) s->recheck &= ~kReadable;
    return n;
  }

  int try_write(HandleId handle, std::span<const uint8_t> buffer) override {
    Socket* s = find(handle);
    if (!s) return -EBADF;
    ++stats_.syscalls;
    int n = send_some(s->fd.get(), buffer);
    if (n == -EAGAIN || (n >= 0 && static_cast<size_t>(n) < buffer.size())) s->recheck &= ~kWritable;
    return n;
  }

  int try_accept(HandleId handle) override {
    Socket* s = find(handle);
    if (!s) return -EBADF;
    if (!s->listener) return -EINVAL;
    ++stats_.syscalls;
    int fd = accept_connection(s->fd.get());
    if (fd == -EAGAIN) s->recheck &= ~kReadable;
    if (fd < 0) return fd;
    return adopt(fd);
  }

  int submit_read(HandleId handle, std::span<uint8_t> buffer, int32_t op_id) override {
    Socket* s = find(handle);
    if (!s) return -EBADF;
    if (s->listener) return -EINVAL;
    if (s->streaming_read) return -EBUSY;
    s->reads.push_back({buffer.data(), clamp(buffer.size()), op_id});
    mark_dirty(handle, *s);
    return 0;
  }

  int submit_write(HandleId handle, std::span<const uint8_t> buffer, int32_t op_id) override {
    Socket* s = find(handle);
    if (!s) return -EBADF;
    if (s->listener) return -EINVAL;
    if (s->connect_op >= 0) return -ENOTCONN;
    if (s->write_torn) return -EPIPE;
    // No inline fast path: the send goes out with the batch's one io_uring_enter, and completes
    // there when the socket has room (its CQE is reaped by the next drain).
    s->writes.push_back({buffer.data(), static_cast<uint32_t>(buffer.size()), 0, op_id});
    mark_dirty(handle, *s);
    return 0;
  }

  int submit_accept(HandleId handle, int32_t op_id) override {
    Socket* s = find(handle);
    if (!s) return -EBADF;
    if (!s->listener) return -EINVAL;
    s->accepts.push_back({op_id});
    mark_dirty(handle, *s);
    return 0;
  }

  int read_start(HandleId handle) override { return set_streaming(handle, &Socket::streaming_read, true); }
  int read_stop(HandleId handle) override { return set_streaming(handle, &Socket::streaming_read, false); }
  int accept_start(HandleId handle) override { return set_streaming(handle, &Socket::streaming_accept, true); }
  int accept_stop(HandleId handle) override { return set_streaming(handle, &Socket::streaming_accept, false); }

  // What the kernel has not seen yet is taken off the socket's queue and completes with
  // -ECANCELED at once (deferred); what it holds gets an IORING_OP_ASYNC_CANCEL by user_data, and
  // completes only with its final CQE — -ECANCELED, or the real result if it won the race — so
  // that no buffer is released while the kernel may still write into it.
  int cancel(HandleId handle, int32_t op_id) override {
    if (handle == -1) {
      if (!timers_.cancel(op_id)) return -ENOENT;
      defer({-1, EventKind::kCompleted, -ECANCELED, op_id});
      return 0;
    }
    Socket* s = find(handle);
    if (!s) return -EBADF;
    if (s->connect_op == op_id) {
      if (s->in_flight & kConnect) return cancel_in_flight(handle, *s, kConnect);
      s->connect_op = -1;
      s->connect_address.reset();
      defer({handle, EventKind::kCompleted, -ECANCELED, op_id});
      return 0;
    }
    for (size_t i = 0; i < s->reads.size(); ++i) {
      if (s->reads[i].op_id != op_id) continue;
      if (i == 0 && (s->in_flight & kRecv)) return cancel_in_flight(handle, *s, kRecv);
      s->reads.erase(s->reads.begin() + static_cast<std::ptrdiff_t>(i));
      defer({handle, EventKind::kCompleted, -ECANCELED, op_id});
      return 0;
    }
    for (size_t i = 0; i < s->accepts.size(); ++i) {
      if (s->accepts[i].op_id != op_id) continue;
      // The kernel's accepts belong to no accept() in particular. If the others queued can take
      // all of them, this one just leaves. Else the kernel's accepts are recalled (one alone cannot
      // be: they share a user_data, and a cancel finds the first again until it is gone), this one
      // ends with what comes back, so that a connection taken meanwhile is not lost, and pump()
      // posts those still wanted once all are back.
      if (s->accepts.size() > s->accepts_in_flight) {
        s->accepts.erase(s->accepts.begin() + static_cast<std::ptrdiff_t>(i));
        defer({handle, EventKind::kCompleted, -ECANCELED, op_id});
        return 0;
      }
      s->accepts[i].cancelled = true;
      if (!(s->cancelling & kAccept)) cancel(handle, *s, kAccept);
      return 0;
    }
    for (size_t i = 0; i < s->writes.size(); ++i) {
      if (s->writes[i].op_id != op_id) continue;
      if (i < s->send_count && (s->in_flight & kSend)) {
        // The send carries it, perhaps with others: withdrawn, kept or torn at its CQE, once the
        // kernel says how much went out.
        s->writes[i].cancelled = true;
        return cancel_in_flight(handle, *s, kSend);
      }
      if (s->writes[i].sent > 0) {
        tear_writes(handle, *s, i, nullptr);  // the head, between two sends of it
      } else {
        s->writes.erase(s->writes.begin() + static_cast<std::ptrdiff_t>(i));
        defer({handle, EventKind::kCompleted, -ECANCELED, op_id});
      }
      return 0;
    }
    return -ENOENT;
  }

  int file_open(const std::string& path, const FileOpenOptions& options, int32_t op_id) override {
    return files_.open([this] { return sqe(); }, path, options, op_id);
  }
  int file_read(HandleId file, std::span<uint8_t> buffer, int64_t position, int32_t op_id) override {
    return files_.transfer([this] { return sqe(); }, false, file, buffer.data(), buffer.size(), position, op_id);
  }
  int file_write(HandleId file, std::span<const uint8_t> buffer, int64_t position, int32_t op_id) override {
    // The kernel only reads from it; one submission path serves both directions.
    return files_.transfer([this] { return sqe(); }, true, file, const_cast<uint8_t*>(buffer.data()), buffer.size(),
                           position, op_id);
  }
  int file_sync(HandleId file, bool data_only, int32_t op_id) override {
    return files_.sync([this] { return sqe(); }, file, data_only, op_id);
  }
  int file_close(HandleId file, int32_t op_id) override { return files_.close([this] { return sqe(); }, file, op_id); }

  int start_timer(uint64_t delay_ms, int32_t op_id) override {
    if (!timers_.push(deadline_after_ms(delay_ms), op_id)) return -EEXIST;
    arm_timer();
    return 0;
  }

  void drain(BatchSink& sink) override {
    in_drain_ = true;
    // Reset the eventfd before looking: whatever completes after this read signals it again.
    uint64_t count;
    ++stats_.syscalls;
    if (::read(event_fd_.get(), &count, sizeof(count)) == sizeof(count)) wake_pending_ = false;
    deferred_.drain_into(sink);
    if (!sink.full()) {
      pump_dirty();
      // One GETEVENTS enter carries the pending submissions and, with DEFER_TASKRUN, runs the
      // completion work that the eventfd announced but the CQ does not show yet.
      enter(true);
      unsigned reaped = 0;
      for (int enters = 1; reap(sink, reaped) && enters < kMaxEntersPerDrain; ++enters) {
        // More completion work waits (the kernel caps each enter), or completions overflowed the
        // CQ (IORING_FEAT_NODROP keeps them on a list that a GETEVENTS enter flushes). Without
        // IORING_SETUP_TASKRUN_FLAG a full pass is the only hint.
        bool more = ring_.features().taskrun_flag() ? (ring_.sq_flags() & IORING_SQ_TASKRUN) : reaped >= kTaskRunCap;
        if (!more && !(ring_.sq_flags() & IORING_SQ_CQ_OVERFLOW)) break;
        enter(true);
      }
    }
    in_drain_ = false;
    // The kernel signals the eventfd when work first queues up, not again while it waits; so what
    // this drain leaves (a full batch, deferred events, capped task work) needs our own signal.
    if (!deferred_.empty() || ring_.cq_head() != ring_.cq_tail() ||
        (ring_.sq_flags() & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW))) {
      signal_wake();
    }
  }

  void flush() override {
    pump_dirty();
    if (ring_.pending() > 0) enter(false);
  }

  Stats stats() const override { return stats_; }

 private:
  static uint32_t clamp(size_t size) {
    // Results travel as int32: one operation moves at most 1 GiB, the caller continues.
    return static_cast<uint32_t>(std::min(size, size_t{1} << 30));
  }

  Socket* find(HandleId handle) {
    Socket* s = sockets_.find(handle);
    return s != nullptr && !s->closing ? s : nullptr;
  }

  HandleId insert(Socket socket) {
    HandleId handle = sockets_.insert(std::move(socket));
    return handle < 0 ? -EMFILE : handle;
  }

  // A connection accepted by the kernel: Nagle off, then a handle.
  int adopt(int fd) {
    ++stats_.syscalls;
    set_no_delay(fd);  // fails harmlessly (EOPNOTSUPP) on a Unix socket
    Socket socket;
    socket.fd.reset(fd);
    return insert(std::move(socket));
  }

  int set_streaming(HandleId handle, bool Socket::*flag, bool on) {
    Socket* s = find(handle);
    if (!s) return -EBADF;
    if ((flag == &Socket::streaming_accept) != s->listener) return -EINVAL;
    if (on && flag == &Socket::streaming_read && !s->reads.empty()) return -EBUSY;
    s->*flag = on;
    mark_dirty(handle, *s);
    return 0;
  }

  void mark_dirty(HandleId handle, Socket& s) {
    if (s.dirty) return;
    s.dirty = true;
    dirty_.push_back(handle);
  }

  void emit(BatchSink& sink, const Event& event) {
    ++stats_.events;
    if (sink.full()) {
      deferred_.push(event);
    } else {
      sink.push(event);
    }
  }

  void defer(const Event& event) {
    ++stats_.events;
    deferred_.push(event);
    if (!in_drain_) signal_wake();
  }

  // Events queued outside the kernel need the eventfd to turn readable.
  void signal_wake() {
    if (wake_pending_) return;
    uint64_t one = 1;
    ++stats_.syscalls;
    if (::write(event_fd_.get(), &one, sizeof(one)) == sizeof(one)) wake_pending_ = true;
  }

  // --- Submission ---------------------------------------------------------------------------

  int enter(bool get_events) {
    ++stats_.syscalls;
    return ring_.enter(get_events);
  }

  void submit() { enter(false); }

  io_uring_sqe* sqe() {
    io_uring_sqe* entry = ring_.get_sqe();
    if (entry == nullptr) {
      // SQ full: hand the kernel what is there and carry on.
      submit();
      entry = ring_.get_sqe();
    }
    return entry;  // null only if the kernel took nothing (then pump() retries at the next enter)
  }

  void start(HandleId handle, Socket& s, Op kind, io_uring_sqe* entry) {
    entry->user_data = user_data(kind, handle);
    s.in_flight |= kind;
    ++in_flight_ops_;
  }

  int cancel_in_flight(HandleId handle, Socket& s, Op kind) {
    if (!(s.cancelling & kind)) cancel(handle, s, kind);
    return 0;
  }

  // Every operation of `kind` the socket has in flight (several only for kAccept).
  void cancel(HandleId handle, Socket& s, Op kind) {
    io_uring_sqe* entry = sqe();
    if (entry == nullptr) return;
    entry->opcode = IORING_OP_ASYNC_CANCEL;
    entry->fd = -1;
    entry->addr = user_data(kind, handle);
    entry->cancel_flags = IORING_ASYNC_CANCEL_ALL;
    entry->user_data = kIgnoreKind << 32;
    s.cancelling |= kind;
  }

  void pump_dirty() {
    // pump() may dirty sockets again (it cannot, today, but a swap keeps that safe).
    pumping_.swap(dirty_);
    for (HandleId handle : pumping_) {
      Socket* s = sockets_.find(handle);
      if (s == nullptr) continue;
      s->dirty = false;
      if (!s->closing) pump(handle, *s);
    }
    pumping_.clear();
  }

  // Turns what the socket wants into SQEs for what is not in flight yet.
  void pump(HandleId handle, Socket& s) {
    int fd = s.fd.get();
    if (s.connect_op >= 0) {
      if (!(s.in_flight & kConnect)) {
        io_uring_sqe* entry = sqe();
        if (entry == nullptr) return requeue(handle, s);
        entry->opcode = IORING_OP_CONNECT;
        entry->fd = fd;
        entry->addr = reinterpret_cast<uint64_t>(s.connect_address->get());
        entry->off = s.connect_address->length;
        start(handle, s, kConnect, entry);
      }
      return;
    }
    if (s.listener) {
      pump_accepts(handle, s);
    } else {
      pump_reads(handle, s);
      if (!s.writes.empty() && !(s.in_flight & kSend)) start_send(handle, s);
    }
    pump_poll(handle, s);
  }

  void requeue(HandleId handle, Socket& s) { mark_dirty(handle, s); }

  // A recv whose bytes are already there completes within the enter that submits it, straight
  // into the CQ; one that had to wait is completed by deferred task work, of which a GETEVENTS
  // enter runs only ~20 (kTaskRunCap), and drain() enters again only once the CQ is empty. Under
  // load a flush posts about as many inline completions as the batch before it consumed, so the
  // CQ never emptied and waiting recvs got 20 completions a drain: with 10 000 clients, ~5 000
  // had recvs seconds old. So while deferred completions wait (IORING_SQ_TASKRUN), a recv polls
  // first: data already there queues it behind them instead of overtaking them. Sends still
  // complete inline: each answers a request whose recv has had its turn, and polling first would
  // cost every send a poll (measured: twice the enters, more CPU per round trip).
  uint16_t recv_flags() const {
    return (ring_.sq_flags() & IORING_SQ_TASKRUN) ? IORING_RECVSEND_POLL_FIRST : 0;
  }

  void pump_reads(HandleId handle, Socket& s) {
    bool reading = s.in_flight & (kRecv | kRecvStream);
    if (!s.reads.empty() && !reading) {
      io_uring_sqe* entry = sqe();
      if (entry == nullptr) return requeue(handle, s);
      entry->opcode = IORING_OP_RECV;
      entry->fd = s.fd.get();
      entry->addr = reinterpret_cast<uint64_t>(s.reads.front().data);
      entry->len = s.reads.front().size;
      entry->ioprio = recv_flags();
      start(handle, s, kRecv, entry);
    } else if (s.streaming_read && !reading) {
      io_uring_sqe* entry = sqe();
      if (entry == nullptr) return requeue(handle, s);
      entry->opcode = IORING_OP_RECV;
      entry->fd = s.fd.get();
      entry->flags = IOSQE_BUFFER_SELECT;
      entry->buf_group = BufferRing::kGroup;
      entry->ioprio = recv_flags() | (ring_.features().multishot_recv ? IORING_RECV_MULTISHOT : 0);
      start(handle, s, kRecvStream, entry);
    } else if (!s.streaming_read && (s.in_flight & kRecvStream) && !(s.cancelling & kRecvStream)) {
      cancel(handle, s, kRecvStream);
    }
  }

  void pump_accepts(HandleId handle, Socket& s) {
    while (!(s.cancelling & kAccept) && s.accepts_in_flight < std::min<size_t>(s.accepts.size(), kMaxAcceptsInFlight)) {
      io_uring_sqe* entry = sqe();
      if (entry == nullptr) return requeue(handle, s);
      prepare_accept(entry, s.fd.get(), false);
      start(handle, s, kAccept, entry);
      ++s.accepts_in_flight;
    }
    if (s.streaming_accept && !(s.in_flight & kAcceptStream)) {
      io_uring_sqe* entry = sqe();
      if (entry == nullptr) return requeue(handle, s);
      prepare_accept(entry, s.fd.get(), ring_.features().multishot_accept);
      start(handle, s, kAcceptStream, entry);
    } else if (!s.streaming_accept && (s.in_flight & kAcceptStream) && !(s.cancelling & kAcceptStream)) {
      cancel(handle, s, kAcceptStream);
    }
  }

  static void prepare_accept(io_uring_sqe* entry, int fd, bool multishot) {
    entry->opcode = IORING_OP_ACCEPT;
    entry->fd = fd;
    entry->accept_flags = SOCK_NONBLOCK | SOCK_CLOEXEC;
    if (multishot) entry->ioprio = IORING_ACCEPT_MULTISHOT;
  }

  // The reactor, emulated. A multishot poll reports *changes* (each wakeup of the socket), not
  // levels: data left unread after a kReadable would never be reported again, and a handler that
  // reads in small pieces would hang. epoll's level-triggered contract is kept by re-checking:
  // each reported readiness sets `recheck` until the handler's own try_read/try_write shows the
  // socket went dry (EAGAIN or a short transfer); if it did not, a one-shot POLL_ADD goes out with
  // the batch's enter, completes at once if the socket is still ready, and reports it again on
  // the next drain. A handler that drains the socket costs nothing extra.
  //
  // The multishot poll always asks for both directions, and interest is filtered here: changing
  // its mask in place (IORING_POLL_UPDATE_EVENTS) fails with EALREADY whenever a wakeup is being
  // processed — seen here with a reactor echo flipping readable/writable per message, which then
  // hung — and removing and re-adding it costs a round trip per flip. Asking for POLLOUT costs
  // little: TCP wakes writers only after a send found the buffer full (SOCK_NOSPACE). As the poll
  // is edge-like, an interest that watch() adds is checked at once with the one-shot poll.
  void pump_poll(HandleId handle, Socket& s) {
    if (s.watched != 0 && !(s.in_flight & kPoll)) {
      io_uring_sqe* entry = sqe();
      if (entry == nullptr) return requeue(handle, s);
      entry->opcode = IORING_OP_POLL_ADD;
      entry->fd = s.fd.get();
      entry->poll32_events = poll_events(kReadable | kWritable);
      entry->len = IORING_POLL_ADD_MULTI;
      start(handle, s, kPoll, entry);
    } else if (s.watched == 0 && (s.in_flight & kPoll) && !(s.cancelling & kPoll)) {
      cancel(handle, s, kPoll);  // re-armed, if watched again, once its last CQE is in
    }
    uint8_t check = s.recheck & s.watched;
    if (check != 0 && !(s.in_flight & kPollCheck)) {
      io_uring_sqe* entry = sqe();
      if (entry == nullptr) return requeue(handle, s);
      entry->opcode = IORING_OP_POLL_ADD;
      entry->fd = s.fd.get();
      entry->poll32_events = poll_events(check);
      start(handle, s, kPollCheck, entry);
      s.recheck = 0;
    }
  }

  void start_send(HandleId handle, Socket& s) {
    io_uring_sqe* entry = sqe();
    if (entry == nullptr) return requeue(handle, s);
    size_t count = std::min(s.writes.size(), kMaxIov);
    entry->fd = s.fd.get();
    // MSG_WAITALL: the kernel itself continues a short send on a stream socket (5.19+), so a big
    // write usually completes in one CQE; a short result is still continued here.
    // MSG_NOSIGNAL: a vanished peer is EPIPE, not a SIGPIPE that kills Node.
    entry->msg_flags = MSG_NOSIGNAL | MSG_WAITALL;
    if (count == 1) {
      const PendingWrite& write = s.writes.front();
      entry->opcode = IORING_OP_SEND;
      entry->addr = reinterpret_cast<uint64_t>(write.data + write.sent);
      entry->len = clamp(write.size - write.sent);
    } else {
      if (!s.send_batch) s.send_batch = take_batch();
      SendBatch& batch = *s.send_batch;
      for (size_t i = 0; i < count; ++i) {
        const PendingWrite& write = s.writes[i];
        batch.iov[i] = {const_cast<uint8_t*>(write.data + write.sent), write.size - write.sent};
      }
      batch.header = {};
      batch.header.msg_iov = batch.iov;
      batch.header.msg_iovlen = count;
      entry->opcode = IORING_OP_SENDMSG;
      entry->addr = reinterpret_cast<uint64_t>(&batch.header);
      entry->len = 1;
    }
    s.send_count = static_cast<uint8_t>(count);
    start(handle, s, kSend, entry);
  }

  std::unique_ptr<SendBatch> take_batch() {
    if (spare_batches_.empty()) return std::make_unique<SendBatch>();
    auto batch = std::move(spare_batches_.back());
    spare_batches_.pop_back();
    return batch;
  }

  // --- Completion -----------------------------------------------------------------------------

  // Moves CQEs into the sink; false when it stopped because the batch is full (the CQEs left in
  // the CQ, and the part of a recv already copied, are picked up by the next drain).
  bool reap(BatchSink& sink, unsigned& reaped) {
    unsigned head = ring_.cq_head();
    unsigned tail = ring_.cq_tail();
    bool complete = true;
    for (; head != tail; ++head) {
      if (sink.full() || !deferred_.empty()) {
        complete = false;
        break;
      }
      if (!complete_one(ring_.cqe_at(head), &sink)) {
        complete = false;
        break;
      }
      // The CQE is gone, whatever path consumed it: a socket closed after part of its CQE was
      // delivered leaves the rest to finish_cancelled(), and a stale count would cut that many
      // bytes off the front of the next socket's data (seen with clients resetting mid-transfer).
      partial_ = 0;
    }
    reaped = head - ring_.cq_head();
    ring_.cq_advance(reaped);
    return complete;
  }

  // At teardown: completions only release what the kernel held.
  void reap_discarding() {
    unsigned head = ring_.cq_head();
    for (unsigned tail = ring_.cq_tail(); head != tail; ++head) complete_one(ring_.cqe_at(head), nullptr);
    ring_.cq_advance(head - ring_.cq_head());
  }

  void wait_for_completion() {
    // What remains are cancellations under way; they normally land within microseconds.
    ++stats_.syscalls;
    ring_.wait(1, 100);
  }

  // Handles one CQE; false to keep it in the CQ for the next drain (its data did not all fit).
  // `sink` is null at teardown.
  bool complete_one(const io_uring_cqe& cqe, BatchSink* sink) {
    uint64_t kind = cqe.user_data >> 32;
    if (kind == kIgnoreKind) return true;
    if (cqe.user_data == RingTimers::kUserData) {
      on_timer(sink);
      return true;
    }
    if (kind == RingFiles::kKind) {
      Event event;
      if (files_.complete([this] { return sqe(); }, cqe, sink == nullptr, event)) emit(*sink, event);
      return true;
    }
    auto handle = static_cast<HandleId>(cqe.user_data & 0xffffffffu);
    auto op = static_cast<Op>(kind);
    Socket* s = sockets_.find(handle);
    bool final = !(cqe.flags & IORING_CQE_F_MORE);
    if (s == nullptr) {  // cannot happen: slots outlive their operations; recover the buffer anyway
      if (cqe.flags & IORING_CQE_F_BUFFER) buffers_.recycle(cqe.flags >> IORING_CQE_BUFFER_SHIFT);
      return true;
    }
    if (s->closing || sink == nullptr) {
      finish_cancelled(handle, *s, op, cqe, sink);
    } else {
      switch (op) {
        case kRecvStream:
          if (!on_stream_data(handle, *s, cqe, *sink)) return false;
          break;
        case kRecv: on_read(handle, *s, cqe.res, *sink); break;
        case kSend: on_sent(handle, *s, cqe.res, *sink); break;
        case kPoll:
        case kPollCheck: on_ready(handle, *s, cqe.res, *sink); break;
        case kConnect: on_connected(handle, *s, cqe.res, *sink); break;
        case kAccept: on_accept(handle, *s, cqe.res, *sink); break;
        case kAcceptStream: on_stream_accept(handle, *s, cqe.res, final, *sink); break;
      }
    }
    if (final) {
      s = sockets_.find(handle);
      if (op != kAccept || --s->accepts_in_flight == 0) {
        s->in_flight &= ~op;
        s->cancelling &= ~op;
      }
      --in_flight_ops_;
      if (s->closing) {
        if (s->in_flight == 0) sockets_.erase(handle);
      } else {
        mark_dirty(handle, *s);  // re-arm, or start what waited for this one
      }
    }
    return true;
  }

  void complete_op(BatchSink* sink, HandleId handle, int32_t result, int32_t op_id) {
    Event event{handle, EventKind::kCompleted, result, op_id};
    if (sink != nullptr) {
      emit(*sink, event);
    } else {
      ++stats_.events;  // teardown: nobody will read it, the loop is closing
    }
  }

  // The socket was closed (or the backend is going away): every operation ends as ECANCELED, and
  // whatever the kernel produced meanwhile is released.
  void finish_cancelled(HandleId handle, Socket& s, Op op, const io_uring_cqe& cqe, BatchSink* sink) {
    if (cqe.flags & IORING_CQE_F_BUFFER) buffers_.recycle(cqe.flags >> IORING_CQE_BUFFER_SHIFT);
    bool accepted = (op == kAccept || op == kAcceptStream) && cqe.res >= 0;
    if (accepted) {
      ++stats_.syscalls;
      ::close(cqe.res);
    }
    switch (op) {
      case kRecv:
        if (!s.reads.empty()) {
          complete_op(sink, handle, -ECANCELED, s.reads.front().op_id);
          s.reads.erase(s.reads.begin());
        }
        break;
      case kSend:
        for (size_t i = 0; i < s.send_count && i < s.writes.size(); ++i) complete_op(sink, handle, -ECANCELED, s.writes[i].op_id);
        s.writes.clear();
        release_batch(s);
        break;
      case kConnect:
        complete_op(sink, handle, -ECANCELED, s.connect_op);
        s.connect_op = -1;
        break;
      case kAccept:
        if (!s.accepts.empty()) {
          complete_op(sink, handle, -ECANCELED, s.accepts.front().op_id);
          s.accepts.erase(s.accepts.begin());
        }
        break;
      default:
        break;
    }
  }

  void release_batch(Socket& s) {
    s.send_count = 0;
    if (s.send_batch) spare_batches_.push_back(std::move(s.send_batch));
  }

  // One CQE of the streaming recv: its bytes go to the arena, and its buffer back to the ring at
  // once. If the arena cannot take them all, the part that fits is delivered and the CQE stays at
  // the head of the CQ with `partial_` recording how much of it is gone.
  bool on_stream_data(HandleId handle, Socket& s, const io_uring_cqe& cqe, BatchSink& sink) {
    bool final = !(cqe.flags & IORING_CQE_F_MORE);
    if (cqe.res > 0 && (cqe.flags & IORING_CQE_F_BUFFER)) {
      unsigned id = cqe.flags >> IORING_CQE_BUFFER_SHIFT;
      auto total = static_cast<size_t>(cqe.res);
      std::span<uint8_t> space = sink.arena_space(total - partial_);
      if (space.empty()) return false;
      std::memcpy(space.data(), buffers_.data(id) + partial_, space.size());
      int32_t offset = sink.commit_arena(space.size());
      emit(sink, {handle, EventKind::kData, static_cast<int32_t>(space.size()), offset});
      partial_ += space.size();
      if (partial_ < total) {
        sink.arena_space(total - partial_);  // marks the sink full: the addon drains again at once
        return false;
      }
      partial_ = 0;
      // Bytes that were already in the kernel's hands when read_stop() ran are delivered, not
      // dropped: JavaScript buffers them like any chunk received before its pause.
      buffers_.recycle(id);
      if (final && s.streaming_read) mark_dirty(handle, s);
      return true;
    }
    if (cqe.flags & IORING_CQE_F_BUFFER) buffers_.recycle(cqe.flags >> IORING_CQE_BUFFER_SHIFT);
    if (cqe.res == -ENOBUFS) {
      // The pool ran dry: nothing was lost (the bytes wait in the socket) and the multishot recv
      // ended; more buffers, and the re-arm on the final CQE, carry on.
      buffers_.grow();
      return true;
    }
    if (cqe.res == -ECANCELED) return true;  // read_stop(); re-armed if read_start() came since
    // EOF or an error ends the stream (even after read_stop(): the kernel consumed it).
    emit(sink, {handle, EventKind::kData, cqe.res, 0});
    s.streaming_read = false;
    return true;
  }

  void on_read(HandleId handle, Socket& s, int32_t result, BatchSink& sink) {
    if (s.reads.empty()) return;
    int32_t op_id = s.reads.front().op_id;
    s.reads.erase(s.reads.begin());
    emit(sink, {handle, EventKind::kCompleted, result, op_id});
  }

  void on_sent(HandleId handle, Socket& s, int32_t result, BatchSink& sink) {
    size_t carried = std::min<size_t>(s.send_count, s.writes.size());
    release_batch(s);
    // A send that cancel() withdrew ends with -ECANCELED (-EINTR when an io-wq worker ran it), or
    // with the count it sent before that: not a broken connection.
    bool withdrawn = (s.cancelling & kSend) && (result == -ECANCELED || result == -EINTR);
    if (withdrawn) result = 0;
    if (result < 0 || (!withdrawn && result == 0 && carried > 0 && s.writes.front().size > s.writes.front().sent)) {
      // The connection is broken: every queued write fails with the error, in order.
      int32_t error = result < 0 ? result : -EPIPE;
      for (const PendingWrite& write : s.writes) emit(sink, {handle, EventKind::kCompleted, error, write.op_id});
      s.writes.clear();
      return;
    }
    auto left = static_cast<uint32_t>(result);
    size_t done = 0;
    for (; done < carried; ++done) {
      PendingWrite& write = s.writes[done];
      uint32_t take = std::min(left, write.size - write.sent);
      write.sent += take;
      left -= take;
      if (write.sent < write.size) break;  // short send: the rest goes first in the next one
      emit(sink, {handle, EventKind::kCompleted, 0, write.op_id});
    }
    s.writes.erase(s.writes.begin(), s.writes.begin() + static_cast<std::ptrdiff_t>(done));
    if (s.cancelling & kSend) settle_cancelled_writes(handle, s, &sink);
  }

  // --- Cancellation and timers --------------------------------------------------------------

  // Writes whose cancel() came while the kernel held them, now that it has let go (or a write
  // that won the race has completed above): withdrawn if none of their bytes went out, else torn.
  void settle_cancelled_writes(HandleId handle, Socket& s, BatchSink* sink) {
    for (size_t i = 0; i < s.writes.size();) {
      if (!s.writes[i].cancelled) {
        ++i;
      } else if (s.writes[i].sent == 0) {
        complete_or_defer(sink, {handle, EventKind::kCompleted, -ECANCELED, s.writes[i].op_id});
        s.writes.erase(s.writes.begin() + static_cast<std::ptrdiff_t>(i));
      } else {
        return tear_writes(handle, s, i, sink);
      }
    }
  }

  // Write `index` was cancelled half-sent (only the head of the queue can be): it completes with
  // the count the peer got, and every write queued behind it is withdrawn, since its bytes would
  // land in the middle of a message (see Backend::cancel).
  void tear_writes(HandleId handle, Socket& s, size_t index, BatchSink* sink) {
    complete_or_defer(sink, {handle, EventKind::kCompleted, static_cast<int32_t>(std::min<uint32_t>(s.writes[index].sent, INT32_MAX)),
                             s.writes[index].op_id});
    for (size_t i = index + 1; i < s.writes.size(); ++i) {
      complete_or_defer(sink, {handle, EventKind::kCompleted, -ECANCELED, s.writes[i].op_id});
    }
    s.writes.resize(index);
    s.write_torn = true;
  }

  void complete_or_defer(BatchSink* sink, const Event& event) {
    if (sink != nullptr) {
      emit(*sink, event);
    } else {
      defer(event);
    }
  }

  // The TIMEOUT's CQE; `sink` is null at teardown, when nothing fires any more.
  void on_timer(BatchSink* sink) {
    --in_flight_ops_;
    timers_.on_cqe(sink != nullptr ? monotonic_now_ns() : 0,
                   [&](int32_t op_id) { emit(*sink, {-1, EventKind::kCompleted, 0, op_id}); });
    if (sink != nullptr) arm_timer();
  }

  void arm_timer() {
    if (timers_.arm([this] { return sqe(); }, kIgnoreKind << 32)) ++in_flight_ops_;
  }

  void on_ready(HandleId handle, Socket& s, int32_t result, BatchSink& sink) {
    if (result <= 0) return;  // cancelled or removed
    auto events = static_cast<uint32_t>(result);
    bool failed = events & (POLLERR | POLLHUP);
    if ((s.watched & kReadable) && ((events & (POLLIN | POLLRDHUP)) || failed)) {
      s.recheck |= kReadable;
      emit(sink, {handle, EventKind::kReadable, 0, 0});
    }
    if ((s.watched & kWritable) && ((events & POLLOUT) || failed)) {
      s.recheck |= kWritable;
      emit(sink, {handle, EventKind::kWritable, 0, 0});
    }
    mark_dirty(handle, s);  // for the re-check, after JavaScript has had its go
  }

  void on_connected(HandleId handle, Socket& s, int32_t result, BatchSink& sink) {
    int32_t op_id = s.connect_op;
    s.connect_op = -1;
    s.connect_address.reset();
    emit(sink, {handle, EventKind::kCompleted, result, op_id});
  }

  // A connection (or an error) goes to the oldest accept still wanted, or failing that to a
  // cancelled one, which then completes normally; a cancellation to the oldest cancelled one, or to
  // nobody. The accepts never number fewer than the kernel's, so a connection always has a taker.
  // Once the last of a recall is back, cancelled accepts left over are settled.
  void on_accept(HandleId handle, Socket& s, int32_t result, BatchSink& sink) {
    auto cancelled = [](const PendingAccept& accept) { return accept.cancelled; };
    auto taker = result == -ECANCELED ? std::find_if(s.accepts.begin(), s.accepts.end(), cancelled)
                                      : std::find_if_not(s.accepts.begin(), s.accepts.end(), cancelled);
    if (taker == s.accepts.end() && result != -ECANCELED) taker = s.accepts.begin();
    bool taken = taker != s.accepts.end();
    int32_t op_id = taken ? taker->op_id : 0;
    if (taken) s.accepts.erase(taker);
    if (s.accepts_in_flight == 1) {
      for (const PendingAccept& accept : s.accepts) {
        if (accept.cancelled) emit(sink, {handle, EventKind::kCompleted, -ECANCELED, accept.op_id});
      }
      std::erase_if(s.accepts, cancelled);
    }
    // Last: adopt() may grow the socket table, which moves `s`.
    if (taken) {
      emit(sink, {handle, EventKind::kCompleted, result >= 0 ? adopt(result) : result, op_id});
    } else if (result >= 0) {
      ::close(result);
    }
  }

  void on_stream_accept(HandleId handle, Socket& s, int32_t result, bool final, BatchSink& sink) {
    if (result == -ECANCELED) return;
    // A connection the kernel accepted after accept_stop() is delivered rather than dropped.
    int32_t accepted = result >= 0 ? adopt(result) : result;
    emit(sink, {handle, EventKind::kAccepted, accepted, 0});
    if (result < 0) {
      // EMFILE and friends: stop until JavaScript calls accept_start() again (it retries later),
      // or the multishot accept would fail again at once, for ever.
      s.streaming_accept = false;
      if (!final) cancel(handle, s, kAcceptStream);
    }
  }

  BackendInfo info_;
  Ring ring_;
  UniqueFd event_fd_;
  BufferRing buffers_;
  HandleTable<Socket> sockets_;
  RingFiles files_;  // regular files: their own table and operation slots
  EventQueue deferred_;
  std::vector<HandleId> dirty_;
  std::vector<HandleId> pumping_;
  std::vector<std::unique_ptr<SendBatch>> spare_batches_;
  Stats stats_;
  size_t partial_ = 0;  // bytes of the CQE at the CQ head already delivered
  uint64_t in_flight_ops_ = 0;
  bool in_drain_ = false;
  bool wake_pending_ = false;
  RingTimers timers_;
};

// TWINLOOP_IO_URING_BUFFERS=n caps the provided-buffer pool (default 4096): tests use a tiny pool
// to make the kernel run out (ENOBUFS) and check that no byte is lost.
unsigned max_buffers_from_environment() {
  const char* text = std::getenv("TWINLOOP_IO_URING_BUFFERS");
  if (text == nullptr) return kMaxBuffers;
  long value = std::strtol(text, nullptr, 10);
  return value >= 1 && value <= 32768 ? static_cast<unsigned>(value) : kMaxBuffers;
}

// TWINLOOP_IO_URING_CQ_ENTRIES=n shrinks the completion queue (and the submission queue with it,
// as the kernel wants CQ >= SQ): tests use a tiny ring to overflow the CQ and fill the SQ.
unsigned cq_entries_from_environment() {
  const char* text = std::getenv("TWINLOOP_IO_URING_CQ_ENTRIES");
  if (text == nullptr) return kCqEntries;
  long value = std::strtol(text, nullptr, 10);
  return value >= 2 && value <= 65536 ? static_cast<unsigned>(value) : kCqEntries;
}

std::unique_ptr<Backend> make_io_uring_backend(int& error, std::string& reason) {
  auto backend = std::make_unique<IoUringBackend>();
  if (int rc = backend->init(reason, max_buffers_from_environment(), cq_entries_from_environment()); rc < 0) {
    error = rc;
    return nullptr;
  }
  return backend;
}

const BackendRegistration kRegistration({"io_uring", make_io_uring_backend, 20});

}  // namespace
}  // namespace twinloop
