// The operations of one socket, and the rules backend.h sets for them, kept once for every
// backend: the queues of submitted reads, writes and accepts, the connect in progress, the
// streaming and reactor flags, and what cancel, close and a finished send do to them.
//
// A backend's per-socket state derives from SocketOperations and adds what its primitive needs (a
// descriptor, SQE bookkeeping, an OVERLAPPED). All the backend decides here is how many operations
// at the head of each queue its kernel holds — `reads_held`, `writes_held`, `accepts_held`,
// `connect_held`, set when it hands them over and cleared when it takes them back. Those cannot
// be withdrawn, since the kernel may still use their buffers: cancel() marks them `cancelled` and
// tells the backend to recall them; they settle when the kernel lets go. The readiness backends,
// whose syscalls finish inside the call, never hold any.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "backend.h"
#include "event_outbox.h"

namespace twinloop {

struct QueuedRead {
  std::span<uint8_t> buffer;
  int32_t op_id;
  bool cancelled = false;  // cancel() came while the kernel held it
};

struct QueuedWrite {
  std::span<const uint8_t> rest;  // what is left to send
  int32_t op_id;
  size_t sent = 0;  // > 0: the peer has a prefix, so withdrawing the rest would tear the stream
  bool cancelled = false;
};

struct QueuedAccept {
  int32_t op_id;
  bool cancelled = false;
};

// What cancel() found: done with, or held by the kernel and to be recalled from it.
enum class CancelOutcome : uint8_t { kNotFound, kSettled, kRecallRead, kRecallWrite, kRecallAccept, kRecallConnect };

struct SocketOperations {
  std::vector<QueuedRead> reads;
  std::vector<QueuedWrite> writes;
  std::vector<QueuedAccept> accepts;
  int32_t connect_op = -1;  // >= 0 while a connect is in progress
  uint8_t reads_held = 0;
  uint8_t writes_held = 0;
  uint8_t accepts_held = 0;
  bool connect_held = false;
  Interest watched = Interest::kNone;  // reactor interest (watch())
  bool listener = false;
  bool streaming_read = false;  // read_start
  // read_start was called once: the stream owns the reads for good, because the bytes it has
  // delivered but JS has not consumed yet come before anything a try_read or submit_read gets.
  bool streamed = false;
  bool streaming_accept = false;
  bool write_torn = false;  // a write was cancelled half-sent: no later byte may follow it

  // The refusals the contract makes before any syscall.
  int check_read() const { return streamed ? kEBUSY : 0; }
  int check_write() const { return connect_op >= 0 ? kENOTCONN : write_torn ? kEPIPE : 0; }
  int check_accept() const { return listener ? 0 : kEINVAL; }
  // Backend::try_write's refusals. Its bytes come after every write submitted before it, so while
  // one is queued or in flight (or the connect that they wait for) the reactor is told "not now"
  // (-EAGAIN), and its kWritable is held back until the queue has drained (reactor_writable());
  // after a torn write no byte may follow (-EPIPE, as submit_write).
  int check_try_write() const {
    if (write_torn) return kEPIPE;
    return reactor_writable() && connect_op < 0 ? 0 : kEAGAIN;
  }
  // Whether a kWritable may be reported: a try_write would not be refused for the queue. A
  // backend that holds one back reports it once the queue drains, so a watcher is not stranded.
  bool reactor_writable() const { return writes.empty(); }

  // Backend::set_streaming; the backend then updates what it asks of the kernel.
  int set_streaming(Stream stream, bool on);

  // Backend::cancel for this socket's operations. A queued one is withdrawn (-ECANCELED); a
  // half-sent write tears the stream (tear_writes); one the kernel holds is marked `cancelled`
  // and left to the backend to recall.
  CancelOutcome cancel(HandleId handle, int32_t op_id, EventOutbox& out);
  // Backend::close: withdraws every operation the kernel does not hold. Returns whether it holds
  // any, which then settle (with -ECANCELED, or what they did) as the kernel gives them back.
  bool withdraw_unheld(HandleId handle, EventOutbox& out);

  // A send that carried the first `carried` writes put `bytes` on the wire: the writes it
  // finished complete with 0, a short one keeps its rest at the head.
  void account_sent(HandleId handle, size_t carried, size_t bytes, EventOutbox& out);
  // The connection broke: every queued write fails with `error`, in order.
  void fail_writes(HandleId handle, int32_t error, EventOutbox& out);
  // The head write failed with `error` on a connection that may go on (a send the kernel
  // refused for want of memory): the writes behind it are still sent. Unless part of it had gone
  // out: then the peer has a torn message, so the writes behind it fail with the same error and
  // later ones with EPIPE, rather than land after the gap.
  void fail_head_write(HandleId handle, int32_t error, EventOutbox& out);
  // The write just queued could not be started, and the backend returns the error for it: it
  // leaves the queue, and the stream is torn if a speculative send had put part of it out.
  void unqueue_last_write() {
    if (writes.back().sent > 0) write_torn = true;
    writes.pop_back();
  }
  // Writes cancelled while the kernel held them, once it has let go: withdrawn if none of their
  // bytes went out, else torn.
  void settle_cancelled_writes(HandleId handle, EventOutbox& out);
  // Write `index` was cancelled half-sent (only the head can be): it completes with the count the
  // peer got, every write behind it is withdrawn — their bytes would land in the middle of a
  // message — and later writes fail with EPIPE (backend.h, cancel()).
  void tear_writes(HandleId handle, size_t index, EventOutbox& out);

  // The read direction broke: every queued read and accept fails with `error`, in order.
  void fail_reads(HandleId handle, int32_t error, EventOutbox& out);
  // The head read finished with `result`.
  void complete_read(HandleId handle, int32_t result, EventOutbox& out);

  // The queued accept that what the kernel delivered goes to — accepts are interchangeable: an
  // -ECANCELED to one that was cancelled, anything else to the oldest still wanted (or, when all
  // were cancelled, the oldest: a connection taken is never dropped). Removes it and returns its
  // op_id, or -1 when no accept waits. The caller posts the completion (after adopting the new
  // connection, which may move this state).
  int32_t take_accept(bool cancelled_result);
  // The kernel gave back its last accept: the cancelled ones still queued settle with -ECANCELED.
  void settle_cancelled_accepts(HandleId handle, EventOutbox& out);
};

}  // namespace twinloop
