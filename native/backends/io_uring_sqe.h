// What the io_uring backend writes into an SQE, in one place: the tags its user_data carries back
// in the CQE, and one prep helper per opcode. As in liburing, every helper fills the common fields
// through prep_rw() and adds what its opcode needs; the rest of the backend (sockets, files,
// timers, cancels) never names an SQE field. Ring::get_sqe() hands out zeroed SQEs, so a helper
// writes only what differs from zero.
#pragma once

#include <linux/io_uring.h>
#include <linux/time_types.h>
#include <sys/socket.h>

#include <cstdint>
#include <span>

namespace twinloop::iouring {

// The kind of operation a CQE belongs to: user_data = kind << 32 | the low 32 bits the kind names.
// The socket kinds are single bits, so that a socket's operations in flight are a mask of them;
// the others are not, so no mask of socket kinds can be mistaken for one.
enum Tag : uint8_t {
  // Socket operations; the low bits are the socket's handle. A socket has at most one of each in
  // flight, except kAccept: a listener's accepts are interchangeable and share one user_data (see
  // on_accept).
  kRecv = 1 << 0,          // submit_read into the caller's buffer
  kRecvStream = 1 << 1,    // set_streaming(kRead): multishot recv from the buffer ring
  kSend = 1 << 2,          // the head of the write queue (SEND or SENDMSG)
  kPoll = 1 << 3,          // watch(): multishot POLL_ADD
  kPollCheck = 1 << 4,     // one-shot POLL_ADD that re-checks readiness (level-triggered emulation)
  kConnect = 1 << 5,
  kAccept = 1 << 6,        // submit_accept
  kAcceptStream = 1 << 7,  // set_streaming(kAccept): multishot accept
  kFileOp = 0xfd,          // a regular file's operation; the low bits are its slot (RingFiles)
  kTimer = 0xfe,           // the loop's one TIMEOUT (RingTimers)
  kIgnore = 0xff,          // cancels, timeout updates: nothing to do with their CQE
};

constexpr uint64_t tag(Tag kind, uint32_t low = 0) { return (uint64_t{kind} << 32) | low; }
constexpr Tag tag_kind(uint64_t user_data) { return static_cast<Tag>(user_data >> 32); }
constexpr uint32_t tag_low(uint64_t user_data) { return static_cast<uint32_t>(user_data); }

inline void set_tag(io_uring_sqe* sqe, uint64_t user_data) { sqe->user_data = user_data; }
// Straight to the kernel's workers, without trying inline first.
inline void set_async(io_uring_sqe* sqe) { sqe->flags |= IOSQE_ASYNC; }

// The fields every opcode shares; what each means depends on the opcode (io_uring_enter(2)).
inline void prep_rw(io_uring_sqe* sqe, uint8_t opcode, int fd, uint64_t addr, uint32_t len, uint64_t offset) {
  sqe->opcode = opcode;
  sqe->fd = fd;
  sqe->addr = addr;
  sqe->len = len;
  sqe->off = offset;
}

template <typename T>
uint64_t address_of(T* pointer) {
  return reinterpret_cast<uint64_t>(pointer);
}

// Sockets.
inline void prep_recv(io_uring_sqe* sqe, int fd, std::span<uint8_t> buffer) {
  prep_rw(sqe, IORING_OP_RECV, fd, address_of(buffer.data()), static_cast<uint32_t>(buffer.size()), 0);
}

// A recv into a buffer the kernel picks from the provided-buffer ring `group`; `ioprio` carries
// the recv flags (IORING_RECV_MULTISHOT).
inline void prep_recv_select(io_uring_sqe* sqe, int fd, uint16_t group, uint16_t ioprio) {
  prep_rw(sqe, IORING_OP_RECV, fd, 0, 0, 0);
  sqe->flags = IOSQE_BUFFER_SELECT;
  sqe->buf_group = group;
  sqe->ioprio = ioprio;
}

inline void prep_send(io_uring_sqe* sqe, int fd, std::span<const uint8_t> buffer, uint32_t msg_flags) {
  prep_rw(sqe, IORING_OP_SEND, fd, address_of(buffer.data()), static_cast<uint32_t>(buffer.size()), 0);
  sqe->msg_flags = msg_flags;
}

// The kernel reads `header` and its iovecs when it issues the op: they must live until the CQE.
inline void prep_sendmsg(io_uring_sqe* sqe, int fd, const msghdr* header, uint32_t msg_flags) {
  prep_rw(sqe, IORING_OP_SENDMSG, fd, address_of(header), 1, 0);
  sqe->msg_flags = msg_flags;
}

inline void prep_accept(io_uring_sqe* sqe, int fd, uint32_t accept_flags, bool multishot) {
  prep_rw(sqe, IORING_OP_ACCEPT, fd, 0, 0, 0);
  sqe->accept_flags = accept_flags;
  if (multishot) sqe->ioprio = IORING_ACCEPT_MULTISHOT;
}

// The kernel may read the address after submission: it must live until the CQE.
inline void prep_connect(io_uring_sqe* sqe, int fd, const sockaddr* address, socklen_t length) {
  prep_rw(sqe, IORING_OP_CONNECT, fd, address_of(address), 0, length);
}

inline void prep_poll_add(io_uring_sqe* sqe, int fd, uint32_t poll_events, bool multishot) {
  prep_rw(sqe, IORING_OP_POLL_ADD, fd, 0, multishot ? IORING_POLL_ADD_MULTI : 0, 0);
  sqe->poll32_events = poll_events;
}

// Cancels the operation(s) tagged `target` (all of them with IORING_ASYNC_CANCEL_ALL).
inline void prep_cancel(io_uring_sqe* sqe, uint64_t target, uint32_t cancel_flags) {
  prep_rw(sqe, IORING_OP_ASYNC_CANCEL, -1, target, 0, 0);
  sqe->cancel_flags = cancel_flags;
}

// Regular files. `offset` -1: the file position, as read(2) would.
inline void prep_openat(io_uring_sqe* sqe, int directory, const char* path, uint32_t open_flags, uint32_t mode) {
  prep_rw(sqe, IORING_OP_OPENAT, directory, address_of(path), mode, 0);
  sqe->open_flags = open_flags;
}

inline void prep_read(io_uring_sqe* sqe, int fd, std::span<uint8_t> buffer, int64_t offset) {
  prep_rw(sqe, IORING_OP_READ, fd, address_of(buffer.data()), static_cast<uint32_t>(buffer.size()),
          static_cast<uint64_t>(offset));
}

inline void prep_write(io_uring_sqe* sqe, int fd, std::span<const uint8_t> buffer, int64_t offset) {
  prep_rw(sqe, IORING_OP_WRITE, fd, address_of(buffer.data()), static_cast<uint32_t>(buffer.size()),
          static_cast<uint64_t>(offset));
}

inline void prep_fsync(io_uring_sqe* sqe, int fd, uint32_t fsync_flags) {
  prep_rw(sqe, IORING_OP_FSYNC, fd, 0, 0, 0);
  sqe->fsync_flags = fsync_flags;
}

inline void prep_close(io_uring_sqe* sqe, int fd) { prep_rw(sqe, IORING_OP_CLOSE, fd, 0, 0, 0); }

// Timeouts. A pure timeout (count 0: not "after n completions"); the kernel reads `spec` inside the
// enter that submits it.
inline void prep_timeout(io_uring_sqe* sqe, const __kernel_timespec* spec, uint32_t timeout_flags) {
  prep_rw(sqe, IORING_OP_TIMEOUT, -1, address_of(spec), 1, 0);
  sqe->timeout_flags = timeout_flags;
}

// Moves the TIMEOUT tagged `target` to `spec` (IORING_TIMEOUT_UPDATE, Linux 5.11).
inline void prep_timeout_update(io_uring_sqe* sqe, uint64_t target, const __kernel_timespec* spec,
                                uint32_t timeout_flags) {
  prep_rw(sqe, IORING_OP_TIMEOUT_REMOVE, -1, target, 0, address_of(spec));
  sqe->timeout_flags = timeout_flags | IORING_TIMEOUT_UPDATE;
}

inline void prep_timeout_remove(io_uring_sqe* sqe, uint64_t target) {
  prep_rw(sqe, IORING_OP_TIMEOUT_REMOVE, -1, target, 0, 0);
}

}  // namespace twinloop::iouring
