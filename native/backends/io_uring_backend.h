// The io_uring backend's class and its per-socket state, shared by the files that implement it:
//   io_uring.cc           the design (read it first), the backend's lifetime, and the calls
//                         JavaScript makes: listen/connect/close, reactor, proactor, cancel, files,
//                         timers
//   io_uring_submit.cc    from what a socket wants to SQEs: pump() and its parts, send batching,
//                         cancels, the timers' TIMEOUT, io_uring_enter
//   io_uring_dispatch.cc  from CQEs to events: drain(), each kind of completion, and the settling
//                         of cancelled operations once the kernel has let go of them
//   io_uring_ring.{h,cc}  the rings themselves: setup, probing, SQ/CQ, the provided-buffer ring
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
#include "../core/event_queue.h"
#include "../core/handle_table.h"
#include "io_uring_files.h"
#include "io_uring_ring.h"
#include "io_uring_timers.h"
#include "posix_socket.h"

namespace twinloop::iouring {

inline constexpr size_t kMaxIov = 64;

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
inline constexpr uint64_t kIgnoreKind = 0xff;  // cancels, poll updates: nothing to do with their CQE

inline uint64_t user_data(Op kind, HandleId handle) { return (uint64_t{kind} << 32) | static_cast<uint32_t>(handle); }

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
  Interest watched = Interest::kNone;
  Interest recheck = Interest::kNone;  // directions reported without a sign that the socket went dry
  uint8_t send_count = 0;   // writes the in-flight send carries
  uint8_t accepts_in_flight = 0;  // kAccept operations the kernel holds
  bool listener = false;
  bool streaming_read = false;
  // read_start was called once: the stream owns the reads for good, because the bytes it has
  // delivered but JS has not consumed yet come before anything a try_read or submit_read gets.
  bool streamed = false;
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
  int submit_write(HandleId handle, std::span<const uint8_t> buffer, int32_t op_id) override;
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
  void flush() override;                 // io_uring_submit.cc

  Stats stats() const override { return stats_; }

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
  void start(HandleId handle, Socket& s, Op kind, io_uring_sqe* entry);
  int cancel_in_flight(HandleId handle, Socket& s, Op kind);
  void cancel(HandleId handle, Socket& s, Op kind);
  void arm_timer();
  void pump_dirty();
  void pump(HandleId handle, Socket& s);
  void requeue(HandleId handle, Socket& s);
  uint16_t recv_flags() const;
  void pump_reads(HandleId handle, Socket& s);
  void pump_accepts(HandleId handle, Socket& s);
  void pump_poll(HandleId handle, Socket& s);
  void start_send(HandleId handle, Socket& s);
  std::unique_ptr<SendBatch> take_batch();
  void release_batch(Socket& s);

  // Completion (io_uring_dispatch.cc).
  void emit(BatchSink& sink, const Event& event);
  void defer(const Event& event);
  void signal_wake();
  bool reap(BatchSink& sink, unsigned& reaped);
  void reap_discarding();
  void wait_for_completion();
  bool complete_one(const io_uring_cqe& cqe, BatchSink* sink);
  void complete_op(BatchSink* sink, HandleId handle, int32_t result, int32_t op_id);
  void finish_cancelled(HandleId handle, Socket& s, Op op, const io_uring_cqe& cqe, BatchSink* sink);
  bool on_stream_data(HandleId handle, Socket& s, const io_uring_cqe& cqe, BatchSink& sink);
  void on_read(HandleId handle, Socket& s, int32_t result, BatchSink& sink);
  void on_sent(HandleId handle, Socket& s, int32_t result, BatchSink& sink);
  void settle_cancelled_writes(HandleId handle, Socket& s, BatchSink* sink);
  void tear_writes(HandleId handle, Socket& s, size_t index, BatchSink* sink);
  void complete_or_defer(BatchSink* sink, const Event& event);
  void on_timer(BatchSink* sink);
  void on_ready(HandleId handle, Socket& s, int32_t result, BatchSink& sink);
  void on_connected(HandleId handle, Socket& s, int32_t result, BatchSink& sink);
  void on_accept(HandleId handle, Socket& s, int32_t result, BatchSink& sink);
  void on_stream_accept(HandleId handle, Socket& s, int32_t result, bool final, BatchSink& sink);

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

}  // namespace twinloop::iouring
