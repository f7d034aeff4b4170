// The io_uring backend's class and its per-socket state, shared by the files that implement it:
//   io_uring.cc           the design (read it first), the backend's lifetime, and the calls
//                         JavaScript makes: listen/connect/close, reactor, proactor, cancel, files,
//                         timers
//   io_uring_submit.cc    from what a socket wants to SQEs: pump() and its parts, send batching,
//                         cancels, the timers' TIMEOUT, io_uring_enter
//   io_uring_dispatch.cc  from CQEs to events: drain(), each kind of completion, and the settling
//                         of cancelled operations once the kernel has let go of them
//   io_uring_ring.{h,cc}  the rings themselves: setup, probing, SQ/CQ, the provided-buffer ring
//   io_uring_sqe.h        what goes into an SQE: the user_data tags and the prep helpers
//   io_uring_files.h, io_uring_timers.h  regular files and timers, on the same ring
#pragma once

#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "../core/backend.h"
#include "../core/event_outbox.h"
#include "../core/handle_table.h"
#include "../core/socket_operations.h"
#include "io_uring_files.h"
#include "io_uring_ring.h"
#include "io_uring_sqe.h"
#include "io_uring_timers.h"
#include "posix_socket.h"

namespace twinloop::iouring {

inline constexpr size_t kMaxIov = 64;

inline uint64_t user_data(Tag kind, HandleId handle) { return tag(kind, static_cast<uint32_t>(handle)); }

// A send of several queued writes: the kernel reads msghdr and iovecs when it issues the op, so
// they live until its CQE. Pooled by the backend; a socket holds one only while such a send is in
// flight.
struct SendBatch {
  msghdr header{};
  iovec iov[kMaxIov];
};

// Per-socket state, 112 bytes: the operations (core's SocketOperations) and what the ring needs of
// them. The queues allocate only once an operation has to wait, so an idle connection costs its slot
// (and in the kernel, its armed multishot recv) and nothing else. Of the held counts, reads_held
// is 1 while a kRecv is in flight, writes_held the writes the send in flight carries,
// accepts_held the kAccept operations in flight, connect_held a kConnect.
struct Socket : SocketOperations {
  // The two bytes first: they fill the tail padding of SocketOperations (else 120 bytes).
  uint8_t in_flight = 0;   // Tag bits
  uint8_t cancelling = 0;  // Tag bits whose cancel SQE is queued
  UniqueFd fd;
  Interest recheck = Interest::kNone;  // directions reported without a sign that the socket went dry
  bool closing = false;
  bool dirty = false;
  std::unique_ptr<SockAddrStorage> connect_address;
  std::unique_ptr<SendBatch> send_batch;
};

class IoUringBackend final : public Backend {
 public:
  IoUringBackend() = default;
  // On failure a negative errno, and why in `reason` (io_uring.cc).
  int init(std::string& reason, unsigned max_buffers, unsigned cq_entries);
  ~IoUringBackend() override;

  const BackendInfo& info() const override { return info_; }
  int poll_fd() const override { return event_fd_.get(); }

  // Sockets (io_uring.cc).
  int listen(const SocketAddress& address, const ListenOptions& options) override;
  int connect(const SocketAddress& address, const SocketAddress* local, int32_t op_id) override;
  int shutdown(HandleId handle) override;
  int close(HandleId handle, bool reset) override;
  int address(HandleId handle, bool peer, SocketAddress& out) override;
  int set_socket_option(HandleId handle, SocketOption option, int value) override;
  int socket_option(HandleId handle, SocketOption option) override;

  int watch(HandleId handle, Interest interest) override;
  int try_read(HandleId handle, std::span<uint8_t> buffer) override;
  int try_write(HandleId handle, std::span<const uint8_t> buffer) override;
  int try_accept(HandleId handle) override;

  int submit_read(HandleId handle, std::span<uint8_t> buffer, int32_t op_id) override;
  int submit_write(HandleId handle, std::span<const uint8_t> buffer, int32_t op_id, WriteKeep keep) override;
  int submit_accept(HandleId handle, int32_t op_id) override;
  int set_streaming(HandleId handle, Stream stream, bool on) override;

  int cancel(HandleId handle, int32_t op_id) override;

  // Files and timers (io_uring.cc).
  int file_open(const std::string& path, const FileOpenOptions& options, int32_t op_id) override;
  int file_read(HandleId file, std::span<uint8_t> buffer, int64_t position, int32_t op_id) override;
  int file_write(HandleId file, std::span<const uint8_t> buffer, int64_t position, int32_t op_id) override;
  int file_sync(HandleId file, bool data_only, int32_t op_id) override;
  int file_close(HandleId file, int32_t op_id) override;
  int file_cancel(HandleId file, int32_t op_id) override;
  int start_timer(uint64_t delay_ms, int32_t op_id) override;

  void drain(BatchSink& sink) override;  // io_uring_dispatch.cc
  int wait(int timeout_ms) override;     // io_uring_dispatch.cc
  void flush() override;                 // io_uring_submit.cc

  Stats stats() const override {
    Stats stats = stats_;
    stats.events = outbox_.events();
    return stats;
  }

 private:
  static uint32_t clamp(size_t size) {
    return static_cast<uint32_t>(std::min(size, kMaxTransfer));  // the caller continues
  }

  void mark_dirty(HandleId handle, Socket& s) {
    if (s.dirty) return;
    s.dirty = true;
    dirty_.push_back(handle);
  }

  // Sockets found, opened and adopted (io_uring.cc).
  Socket* find(HandleId handle);
  HandleId insert(Socket socket);
  int adopt(int fd);

  // Submission (io_uring_submit.cc).
  int enter(bool get_events);
  void submit();
  io_uring_sqe* sqe();
  void start(HandleId handle, Socket& s, Tag kind, io_uring_sqe* entry);
  void recall(HandleId handle, Socket& s, Tag kind);
  void cancel(HandleId handle, Socket& s, Tag kind);
  void arm_timer();
  void pump_dirty();
  void pump(HandleId handle, Socket& s);
  void requeue(HandleId handle, Socket& s);
  void pump_reads(HandleId handle, Socket& s);
  void pump_accepts(HandleId handle, Socket& s);
  void pump_poll(HandleId handle, Socket& s);
  void start_send(HandleId handle, Socket& s);
  std::unique_ptr<SendBatch> take_batch();
  void release_batch(Socket& s);

  // Completion (io_uring_dispatch.cc).
  void signal_wake();
  bool reap();
  void reap_discarding();
  void wait_for_completion();
  bool complete_one(const io_uring_cqe& cqe, bool discarding);
  void let_go(Socket& s, Tag op);
  void finish_cancelled(HandleId handle, Socket& s, Tag op, const io_uring_cqe& cqe);
  bool on_stream_data(HandleId handle, Socket& s, const io_uring_cqe& cqe);
  void on_sent(HandleId handle, Socket& s, int32_t result);
  void on_timer(bool discarding);
  void on_ready(HandleId handle, Socket& s, int32_t result);
  void on_connected(HandleId handle, Socket& s, int32_t result);
  void on_accept(HandleId handle, Socket& s, int32_t result);
  void on_stream_accept(HandleId handle, Socket& s, int32_t result, bool final);

  BackendInfo info_;
  Ring ring_;
  UniqueFd event_fd_;
  BufferRing buffers_;
  HandleTable<Socket> sockets_;
  RingFiles files_;  // regular files: their own table and operation slots
  EventOutbox outbox_{[](void* self) { static_cast<IoUringBackend*>(self)->signal_wake(); }, this};
  std::vector<HandleId> dirty_;
  std::vector<HandleId> pumping_;
  std::vector<std::unique_ptr<SendBatch>> spare_batches_;
  Stats stats_;
  size_t partial_ = 0;  // bytes of the CQE at the CQ head already delivered
  uint64_t in_flight_ops_ = 0;
  bool wake_pending_ = false;
  RingTimers timers_;
};

}  // namespace twinloop::iouring
