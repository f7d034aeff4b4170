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
//
// The class and the map of the files that implement it: io_uring_backend.h.
#include "io_uring_backend.h"

#include "../core/byte_pool.h"

#include <sys/eventfd.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <utility>

#include "monotonic_clock.h"

namespace twinloop::iouring {
namespace {

constexpr unsigned kSqEntries = 1024;
// Multishot operations post many CQEs per SQE; a deep CQ keeps bursts off the overflow list
// (16 B per entry: 128 KiB).
constexpr unsigned kCqEntries = 8192;
// A buffer ring's limit; BufferRing says why the pool may need it all.
constexpr unsigned kMaxBuffers = 32768;
// How long teardown waits for the kernel to give back what it holds (DESIGN: bounded teardown).
constexpr uint64_t kTeardownBoundMs = 1000;

}  // namespace

int IoUringBackend::init(std::string& reason, unsigned max_buffers, unsigned cq_entries) {
  if (int rc = ring_.open(std::min(kSqEntries, cq_entries), cq_entries, reason); rc < 0) return rc;
  for (uint8_t op : {IORING_OP_RECV, IORING_OP_SEND, IORING_OP_SENDMSG, IORING_OP_ACCEPT, IORING_OP_CONNECT,
                     IORING_OP_POLL_ADD, IORING_OP_POLL_REMOVE, IORING_OP_ASYNC_CANCEL, IORING_OP_NOP,
                     IORING_OP_TIMEOUT, IORING_OP_TIMEOUT_REMOVE}) {
    if (!ring_.supports(op)) {
      reason = "io_uring lacks the socket opcodes (kernel older than 5.19)";
      return kENOSYS;
    }
  }
  if (int rc = buffers_.open(ring_, max_buffers); rc < 0) {
    reason = std::string("no provided-buffer ring (IORING_REGISTER_PBUF_RING, Linux 5.19): ") + std::strerror(-rc);
    return rc;
  }
  // Node's loop watches an eventfd that the kernel signals as it posts CQEs: the completion work
  // of COOP_TASKRUN wakes this thread out of epoll_wait and runs on its way out (Ring::setup).
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
  list.insert(list.end(), {"coop-taskrun", "taskrun-flag", "submit-all"});
  if (f.registered_ring_fd) list.push_back("registered-ring-fd");
  if (f.kernel_features & IORING_FEAT_NODROP) list.push_back("cq-nodrop");
  if (f.kernel_features & IORING_FEAT_FAST_POLL) list.push_back("fast-poll");
  list.push_back(f.multishot_accept ? "multishot-accept" : "accept");
  list.push_back(f.multishot_recv ? "multishot-recv" : "recv-buffer-select");
  list.push_back("provided-buffer-ring:" + std::to_string(buffers_.max_buffers()) + "x" +
                 std::to_string(buffers_.buffer_size() / 1024) + "KiB");
  if (buffers_.incremental()) list.push_back("incremental-buffers");
  list.push_back("multishot-poll");
  list.push_back("eventfd-wake");
  ++stats_.syscalls;  // the probe, the registrations: counted as one, they happen once
  return 0;
}

IoUringBackend::~IoUringBackend() {
  // The kernel must be done with every buffer before this returns: cancel everything, then wait
  // for the final CQE of each operation (closing the ring fd alone would let the kernel finish
  // them asynchronously, after JavaScript has released the buffers).
  sockets_.for_each([&](HandleId handle, Socket& s) {
    if (!s.closing) close(handle, false);
  });
  timers_.disarm([this] { return sqe(); });
  files_.cancel_all([this] { return sqe(); });
  // Bounded, whatever the kernel is blocked on: cancelled operations land within microseconds,
  // a file read from a disk within milliseconds.
  uint64_t deadline = deadline_after_ms(kTeardownBoundMs);
  while (in_flight_ops_ + files_.in_flight() > 0 && monotonic_now_ns() < deadline) {
    pump_dirty();
    if (ring_.enter(true) < 0 && ring_.pending() > 0) break;
    reap_discarding();
    if (in_flight_ops_ + files_.in_flight() == 0) break;
    wait_for_completion();
  }
  abandoned_operations += in_flight_ops_ + files_.in_flight();
}

int IoUringBackend::listen(const SocketAddress& address, const ListenOptions& options) {
  UniqueFd fd;
  stats_.syscalls += 4;
  if (int rc = open_listener(address, options, fd); rc < 0) return rc;
  Socket socket;
  socket.fd = std::move(fd);
  socket.listener = true;
  return insert(std::move(socket));
}

int IoUringBackend::connect(const SocketAddress& address, const SocketAddress* local, int32_t op_id) {
  auto storage = std::make_unique<SockAddrStorage>();
  if (int rc = to_sockaddr(address, *storage); rc < 0) return rc;
  stats_.syscalls += (address.family != SocketAddress::Family::kUnix ? 2 : 1) + (local != nullptr ? 1 : 0);
  Socket socket;
  if (int rc = open_client_socket(address, local, socket.fd); rc < 0) return rc;
  socket.connect_op = op_id;
  socket.connect_address = std::move(storage);
  HandleId handle = insert(std::move(socket));
  if (handle >= 0) mark_dirty(handle, *sockets_.find(handle));
  return handle;
}

int IoUringBackend::shutdown(HandleId handle) {
  Socket* s = find(handle);
  if (!s) return kEBADF;
  ++stats_.syscalls;
  return ::shutdown(s->fd.get(), SHUT_WR) == 0 ? 0 : -errno;
}

int IoUringBackend::close(HandleId handle, bool reset) {
  Socket* s = find(handle);
  if (!s) return kEBADF;
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
  s->withdraw_unheld(handle, outbox_);
  ++stats_.syscalls;
  s->fd.reset();
  for (uint8_t bit = 1; bit != 0; bit <<= 1) {
    if (s->in_flight & bit) recall(handle, *s, static_cast<Tag>(bit));
  }
  if (s->in_flight == 0) sockets_.erase(handle);
  return 0;
}

int IoUringBackend::address(HandleId handle, bool peer, SocketAddress& out) {
  Socket* s = find(handle);
  if (!s) return kEBADF;
  ++stats_.syscalls;
  return socket_address(s->fd.get(), peer, out);
}

int IoUringBackend::set_socket_option(HandleId handle, SocketOption option, int value) {
  Socket* s = find(handle);
  if (!s) return kEBADF;
  ++stats_.syscalls;
  return twinloop::set_socket_option(s->fd.get(), option, value);
}

int IoUringBackend::socket_option(HandleId handle, SocketOption option) {
  Socket* s = find(handle);
  if (!s) return kEBADF;
  return twinloop::socket_option(s->fd.get(), option);
}

int IoUringBackend::watch(HandleId handle, Interest interest) {
  Socket* s = find(handle);
  if (!s) return kEBADF;
  s->recheck = (s->recheck | (interest & ~s->watched)) & interest;
  s->watched = interest;
  mark_dirty(handle, *s);
  return 0;
}


// The reactor's syscalls. A read or write that comes back short or EAGAIN means the socket went
// dry while the multishot poll was armed, so the poll reports the next change by itself; any
// other outcome leaves the readiness re-check (see pump_poll) in place.
int IoUringBackend::try_read(HandleId handle, std::span<uint8_t> buffer) {
  Socket* s = find(handle);
  if (!s) return kEBADF;
  if (int rc = s->check_read(); rc < 0) return rc;
  ++stats_.syscalls;
  int n = recv_some(s->fd.get(), buffer);
  if (n == kEAGAIN || (n > 0 && static_cast<size_t>(n) < buffer.size())) s->recheck &= ~Interest::kReadable;
  return n;
}

int IoUringBackend::try_write(HandleId handle, std::span<const uint8_t> buffer) {
  Socket* s = find(handle);
  if (!s) return kEBADF;
  if (int rc = s->check_try_write(); rc < 0) return rc;  // the recheck stays: on_sent re-arms it
  ++stats_.syscalls;
  int n = send_some(s->fd.get(), buffer);
  if (n == kEAGAIN || (n >= 0 && static_cast<size_t>(n) < buffer.size())) s->recheck &= ~Interest::kWritable;
  return n;
}

int IoUringBackend::try_accept(HandleId handle) {
  Socket* s = find(handle);
  if (!s) return kEBADF;
  if (int rc = s->check_accept(); rc < 0) return rc;
  ++stats_.syscalls;
  int fd = accept_connection(s->fd.get());
  if (fd == kEAGAIN) s->recheck &= ~Interest::kReadable;
  if (fd < 0) return fd;
  return adopt(fd);
}

int IoUringBackend::submit_read(HandleId handle, std::span<uint8_t> buffer, int32_t op_id) {
  Socket* s = find(handle);
  if (!s) return kEBADF;
  if (s->listener) return kEINVAL;
  if (int rc = s->check_read(); rc < 0) return rc;
  s->reads.push_back({buffer, op_id});
  mark_dirty(handle, *s);
  return 0;
}

int IoUringBackend::submit_write(HandleId handle, std::span<const uint8_t> buffer, int32_t op_id, WriteKeep keep) {
  Socket* s = find(handle);
  if (!s) return kEBADF;
  if (s->listener) return kEINVAL;
  if (int rc = s->check_write(); rc < 0) return rc;
  // No inline fast path: the send goes out with the batch's one io_uring_enter, and completes
  // there when the socket has room (its CQE is reaped by the next drain).
  if (int rc = s->queue_write(buffer, op_id, 0, keep); rc < 0) return rc;
  mark_dirty(handle, *s);
  return 0;
}

int IoUringBackend::submit_accept(HandleId handle, int32_t op_id) {
  Socket* s = find(handle);
  if (!s) return kEBADF;
  if (int rc = s->check_accept(); rc < 0) return rc;
  s->accepts.push_back({op_id});
  mark_dirty(handle, *s);
  return 0;
}

// What the kernel has not seen yet is taken off the socket's queue and completes with
// -ECANCELED at once (SocketOperations::cancel); what it holds gets an IORING_OP_ASYNC_CANCEL by
// user_data, and completes only with its final CQE — -ECANCELED, or the real result if it won the
// race — so that no buffer is released while the kernel may still write into it. A listener's
// accepts are recalled all at once (one alone cannot be: they share a user_data, and a cancel finds
// the first again until it is gone); pump() posts those still wanted once all are back.
int IoUringBackend::cancel(HandleId handle, int32_t op_id) {
  if (handle == -1) return cancel_timer(timers_, op_id, outbox_);
  Socket* s = find(handle);
  if (!s) return kEBADF;
  switch (s->cancel(handle, op_id, outbox_)) {
    case CancelOutcome::kNotFound: return kENOENT;
    case CancelOutcome::kSettled:
      if (s->connect_op < 0) s->connect_address.reset();
      return 0;
    case CancelOutcome::kRecallRead: recall(handle, *s, kRecv); return 0;
    case CancelOutcome::kRecallWrite: recall(handle, *s, kSend); return 0;
    case CancelOutcome::kRecallAccept: recall(handle, *s, kAccept); return 0;
    case CancelOutcome::kRecallConnect: recall(handle, *s, kConnect); return 0;
  }
  return kENOENT;
}

int IoUringBackend::file_open(const std::string& path, const FileOpenOptions& options, int32_t op_id) {
  return files_.open([this] { return sqe(); }, path, options, op_id);
}

int IoUringBackend::file_read(HandleId file, std::span<uint8_t> buffer, int64_t position, int32_t op_id) {
  return files_.read([this] { return sqe(); }, file, buffer, position, op_id);
}

int IoUringBackend::file_write(HandleId file, std::span<const uint8_t> buffer, int64_t position, int32_t op_id) {
  return files_.write([this] { return sqe(); }, file, buffer, position, op_id);
}

int IoUringBackend::file_sync(HandleId file, bool data_only, int32_t op_id) {
  return files_.sync([this] { return sqe(); }, file, data_only, op_id);
}

int IoUringBackend::file_close(HandleId file, int32_t op_id) { return files_.close([this] { return sqe(); }, file, op_id); }

int IoUringBackend::file_cancel(HandleId file, int32_t op_id) {
  return files_.cancel([this] { return sqe(); }, [this](const Event& event) { outbox_.post(event); }, file, op_id);
}

int IoUringBackend::start_timer(uint64_t delay_ms, int32_t op_id) {
  if (!timers_.push(deadline_after_ms(delay_ms), op_id)) return kEEXIST;
  arm_timer();
  return 0;
}

Socket* IoUringBackend::find(HandleId handle) {
  Socket* s = sockets_.find(handle);
  return s != nullptr && !s->closing ? s : nullptr;
}

HandleId IoUringBackend::insert(Socket socket) {
  HandleId handle = sockets_.insert(std::move(socket));
  return handle < 0 ? kEMFILE : handle;
}

// A connection accepted by the kernel: Nagle off, then a handle.
int IoUringBackend::adopt(int fd) {
  ++stats_.syscalls;
  set_no_delay(fd);  // fails harmlessly (EOPNOTSUPP) on a Unix socket
  Socket socket;
  socket.fd.reset(fd);
  return insert(std::move(socket));
}

int IoUringBackend::set_streaming(HandleId handle, Stream stream, bool on) {
  Socket* s = find(handle);
  if (!s) return kEBADF;
  if (int rc = s->set_streaming(stream, on); rc < 0) return rc;
  mark_dirty(handle, *s);
  return 0;
}

namespace {

// A number from the environment, or `fallback` when it is unset or outside [low, high].
unsigned from_environment(const char* name, long low, long high, unsigned fallback) {
  const char* text = std::getenv(name);
  if (text == nullptr) return fallback;
  long value = std::strtol(text, nullptr, 10);
  return value >= low && value <= high ? static_cast<unsigned>(value) : fallback;
}

std::unique_ptr<Backend> make_io_uring_backend(int& error, std::string& reason) {
  // TWINLOOP_IO_URING_BUFFERS=n caps the provided-buffer pool (default 32768): tests use a tiny pool
  // to make the kernel run out (ENOBUFS) and check that no byte is lost.
  unsigned max_buffers = from_environment("TWINLOOP_IO_URING_BUFFERS", 1, 32768, kMaxBuffers);
  // TWINLOOP_IO_URING_CQ_ENTRIES=n shrinks the completion queue (and the submission queue with it,
  // as the kernel wants CQ >= SQ): tests use a tiny ring to overflow the CQ and fill the SQ.
  unsigned cq_entries = from_environment("TWINLOOP_IO_URING_CQ_ENTRIES", 2, 65536, kCqEntries);
  auto backend = std::make_unique<IoUringBackend>();
  if (int rc = backend->init(reason, max_buffers, cq_entries); rc < 0) {
    error = rc;
    return nullptr;
  }
  return backend;
}

const BackendRegistration kRegistration({"io_uring", make_io_uring_backend, 20});

}  // namespace
}  // namespace twinloop::iouring
