// From the completion queue to events. drain() reaps the CQEs into JavaScript's batch; each goes,
// by the kind of operation in its user_data, to the handler of that kind, and the final CQE of an
// operation lets its socket re-arm, start what waited for it, or, once closed, free its slot.
// Operations cancelled while the kernel held them are settled here, when it lets go of them. The
// design is described in io_uring.cc.
#include "io_uring_backend.h"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <span>

#include "monotonic_clock.h"

namespace twinloop::iouring {
namespace {

// A drain enters again while the kernel says completion work waits (IORING_SQ_TASKRUN: it kept
// arriving while the last enter ran it), up to this bound so a flood cannot starve Node's loop.
constexpr int kMaxEntersPerDrain = 32;

}  // namespace

void IoUringBackend::drain(BatchSink& sink) {
  // Reset the eventfd before looking: whatever completes after this read signals it again.
  uint64_t count;
  ++stats_.syscalls;
  if (::read(event_fd_.get(), &count, sizeof(count)) == sizeof(count)) wake_pending_ = false;
  outbox_.begin_drain(sink);
  if (!outbox_.full()) {
    pump_dirty();
    // One GETEVENTS enter carries the pending submissions and runs the completion work that
    // waits. Work that woke this thread has already run on its way back from a syscall (the
    // eventfd read above at the latest): its CQEs are in the CQ, and no enter is needed for them.
    if (ring_.pending() > 0 || ring_.completions_wait_in_kernel()) enter(true);
    for (int enters = 1; reap() && enters < kMaxEntersPerDrain; ++enters) {
      // Overflowed CQEs are not lost (IORING_FEAT_NODROP): the next enter flushes them.
      if (!ring_.completions_wait_in_kernel()) break;
      enter(true);
    }
  }
  outbox_.end_drain();  // signals for the events it still holds
  // What this drain leaves behind (a full batch, work that kept arriving) needs our own signal:
  // the kernel signals the eventfd as it posts CQEs, not for those already posted.
  if (ring_.cq_head() != ring_.cq_tail() || ring_.completions_wait_in_kernel()) {
    signal_wake();
  }
}

// Submission and wait in one enter (liburing's io_uring_submit_and_wait), unless the eventfd was
// signalled for events that need no kernel (the outbox's, a drain's leftovers).
int IoUringBackend::wait(int timeout_ms) {
  pump_dirty();
  if (wake_pending_ || ring_.cq_head() != ring_.cq_tail()) return enter(false);
  ++stats_.syscalls;
  int rc = ring_.wait(1, timeout_ms);
  return rc == kEINTR || rc == -ETIME ? 0 : rc;  // ETIME: the timeout passed
}

// Events queued outside the kernel need the eventfd to turn readable.
void IoUringBackend::signal_wake() {
  if (wake_pending_) return;
  uint64_t one = 1;
  ++stats_.syscalls;
  if (::write(event_fd_.get(), &one, sizeof(one)) == sizeof(one)) wake_pending_ = true;
}

// Moves CQEs into the batch; false when it stopped because the batch is full (the CQEs left in
// the CQ, and the part of a recv already copied, are picked up by the next drain).
bool IoUringBackend::reap() {
  unsigned head = ring_.cq_head();
  unsigned tail = ring_.cq_tail();
  bool complete = true;
  for (; head != tail; ++head) {
    if (outbox_.full() || !complete_one(ring_.cqe_at(head), false)) {
      complete = false;
      break;
    }
    // The CQE is gone, whatever path consumed it: a socket closed after part of its CQE was
    // delivered leaves the rest to finish_cancelled(), and a stale count would cut that many
    // bytes off the front of the next socket's data (seen with clients resetting mid-transfer).
    partial_ = 0;
  }
  ring_.cq_advance(head - ring_.cq_head());
  return complete;
}

// At teardown: completions only release what the kernel held.
void IoUringBackend::reap_discarding() {
  unsigned head = ring_.cq_head();
  for (unsigned tail = ring_.cq_tail(); head != tail; ++head) complete_one(ring_.cqe_at(head), true);
  ring_.cq_advance(head - ring_.cq_head());
}

void IoUringBackend::wait_for_completion() {
  // What remains are cancellations under way; they normally land within microseconds.
  ++stats_.syscalls;
  ring_.wait(1, 100);
}

// Handles one CQE; false to keep it in the CQ for the next drain (its data did not all fit).
// `discarding` at teardown, when completions only release what the kernel held.
bool IoUringBackend::complete_one(const io_uring_cqe& cqe, bool discarding) {
  Tag kind = tag_kind(cqe.user_data);
  if (kind == kIgnore) return true;
  if (kind == kTimer) {
    on_timer(discarding);
    return true;
  }
  if (kind == kFileOp) {
    files_.complete([this] { return sqe(); }, [this](const Event& event) { outbox_.post(event); }, cqe, discarding);
    return true;
  }
  auto handle = static_cast<HandleId>(tag_low(cqe.user_data));
  Socket* s = sockets_.find(handle);
  bool final = !(cqe.flags & IORING_CQE_F_MORE);
  if (s == nullptr) {  // cannot happen: slots outlive their operations; recover the buffer anyway
    buffers_.release(cqe);
    return true;
  }
  if (s->closing || discarding) {
    finish_cancelled(handle, *s, kind, cqe);
  } else {
    switch (kind) {
      case kRecvStream:
        if (!on_stream_data(handle, *s, cqe)) return false;
        break;
      case kRecv: s->complete_read(handle, cqe.res, outbox_); break;
      case kSend: on_sent(handle, *s, cqe.res); break;
      case kPoll:
      case kPollCheck: on_ready(handle, *s, cqe.res); break;
      case kConnect: on_connected(handle, *s, cqe.res); break;
      case kAccept: on_accept(handle, *s, cqe.res); break;
      case kAcceptStream: on_stream_accept(handle, *s, cqe.res, final); break;
      default: break;
    }
  }
  if (final) {
    s = sockets_.find(handle);  // adopt() may have moved it
    let_go(*s, kind);
    --in_flight_ops_;
    if (s->closing) {
      if (s->in_flight == 0) sockets_.erase(handle);
    } else {
      mark_dirty(handle, *s);  // re-arm, or start what waited for this one
    }
  }
  return true;
}

// The final CQE of an operation: the kernel holds it no more.
void IoUringBackend::let_go(Socket& s, Tag op) {
  switch (op) {
    case kRecv: s.reads_held = 0; break;
    case kSend:
      s.writes_held = 0;
      release_batch(s);
      break;
    case kConnect: s.connect_held = false; break;
    case kAccept:
      if (--s.accepts_held > 0) return;  // the others are still in the kernel
      break;
    default: break;
  }
  s.in_flight &= ~op;
  s.cancelling &= ~op;
}

// The socket was closed (or the backend is going away): every operation ends as ECANCELED, and
// whatever the kernel produced meanwhile is released.
void IoUringBackend::finish_cancelled(HandleId handle, Socket& s, Tag op, const io_uring_cqe& cqe) {
  buffers_.release(cqe);
  bool accepted = (op == kAccept || op == kAcceptStream) && cqe.res >= 0;
  if (accepted) {
    ++stats_.syscalls;
    ::close(cqe.res);
  }
  switch (op) {
    case kRecv: s.complete_read(handle, kECANCELED, outbox_); break;
    case kSend: s.fail_writes(handle, kECANCELED, outbox_); break;  // close withdrew all but those it carried
    case kConnect:
      outbox_.post({handle, EventKind::kCompleted, kECANCELED, s.connect_op});
      s.connect_op = -1;
      break;
    case kAccept:
      if (int32_t op_id = s.accepts.pop_front(); op_id >= 0) outbox_.post({handle, EventKind::kCompleted, kECANCELED, op_id});
      break;
    default:
      break;
  }
}

// One CQE of the streaming recv: its bytes go to the arena, and its buffer back to the ring at
// once. If the arena cannot take them all, the part that fits is delivered and the CQE stays at
// the head of the CQ with `partial_` recording how much of it is gone.
bool IoUringBackend::on_stream_data(HandleId handle, Socket& s, const io_uring_cqe& cqe) {
  BatchSink& sink = *outbox_.sink();
  bool final = !(cqe.flags & IORING_CQE_F_MORE);
  if (cqe.res > 0 && (cqe.flags & IORING_CQE_F_BUFFER)) {
    auto total = static_cast<size_t>(cqe.res);
    std::span<uint8_t> space = sink.arena_space(total - partial_);
    if (space.empty()) return false;
    std::memcpy(space.data(), buffers_.received(cqe) + partial_, space.size());
    int32_t offset = sink.commit_arena(space.size());
    outbox_.post({handle, EventKind::kData, static_cast<int32_t>(space.size()), offset});
    partial_ += space.size();
    if (partial_ < total) {
      sink.arena_space(total - partial_);  // marks the sink full: the addon drains again at once
      return false;
    }
    partial_ = 0;
    // Bytes that were already in the kernel's hands when read_stop() ran are delivered, not
    // dropped: JavaScript buffers them like any chunk received before its pause.
    buffers_.release(cqe);
    if (final && s.streaming_read) mark_dirty(handle, s);
    return true;
  }
  buffers_.release(cqe);
  if (cqe.res == kENOBUFS) {
    // The pool ran dry: nothing was lost (the bytes wait in the socket) and the multishot recv
    // ended; more buffers, and the re-arm on the final CQE, carry on.
    buffers_.grow();
    return true;
  }
  if (cqe.res == kECANCELED) return true;  // read_stop(); re-armed if read_start() came since
  // EOF or an error ends the stream (even after read_stop(): the kernel consumed it).
  outbox_.post({handle, EventKind::kData, cqe.res, 0});
  s.streaming_read = false;
  return true;
}

void IoUringBackend::on_sent(HandleId handle, Socket& s, int32_t result) {
  size_t carried = std::min<size_t>(s.writes_held, s.writes.size());
  // A send that cancel() withdrew ends with -ECANCELED (-EINTR when an io-wq worker ran it), or
  // with the count it sent before that: not a broken connection.
  bool withdrawn = (s.cancelling & kSend) && (result == kECANCELED || result == kEINTR);
  if (withdrawn) result = 0;
  if (result < 0 || (!withdrawn && result == 0 && carried > 0 && !s.writes.front().rest.empty())) {
    s.fail_writes(handle, result < 0 ? result : kEPIPE, outbox_);  // the connection is broken
  } else {
    s.account_sent(handle, carried, static_cast<size_t>(result), outbox_);
    // Writes whose cancel() came while the kernel held them, now that it has let go (or a write
    // that won the race has completed above).
    if (s.cancelling & kSend) s.settle_cancelled_writes(handle, outbox_);
  }
  // The writable on_ready held back while the queue was busy: the poll is edge-like, and the
  // socket may have had room all along, so a one-shot poll asks now (pump_poll, on the re-arm
  // the final CQE marks).
  if (has(s.watched, Interest::kWritable) && s.reactor_writable()) s.recheck |= Interest::kWritable;
}

// The TIMEOUT's CQE; at teardown nothing fires any more.
void IoUringBackend::on_timer(bool discarding) {
  --in_flight_ops_;
  timers_.on_cqe(discarding ? 0 : monotonic_now_ns(),
                 [&](int32_t op_id) { outbox_.post({-1, EventKind::kCompleted, 0, op_id}); });
  if (!discarding) arm_timer();
}

void IoUringBackend::on_ready(HandleId handle, Socket& s, int32_t result) {
  if (result <= 0) return;  // cancelled or removed
  auto events = static_cast<uint32_t>(result);
  bool failed = events & (POLLERR | POLLHUP);
  if (has(s.watched, Interest::kReadable) && ((events & (POLLIN | POLLRDHUP)) || failed)) {
    s.recheck |= Interest::kReadable;
    outbox_.post({handle, EventKind::kReadable, 0, 0});
  }
  // Held back while writes are queued (try_write would refuse); on_sent re-checks once they are done.
  if (has(s.watched, Interest::kWritable) && s.reactor_writable() && ((events & POLLOUT) || failed)) {
    s.recheck |= Interest::kWritable;
    outbox_.post({handle, EventKind::kWritable, 0, 0});
  }
  mark_dirty(handle, s);  // for the re-check, after JavaScript has had its go
}

void IoUringBackend::on_connected(HandleId handle, Socket& s, int32_t result) {
  int32_t op_id = s.connect_op;
  s.connect_op = -1;
  s.connect_address.reset();
  outbox_.post({handle, EventKind::kCompleted, result, op_id});
}

// A connection (or an error) goes to the accept SocketOperations::take_accept picks. The accepts
// never number fewer than the kernel's, so a connection always has a taker. Once the last of a
// recall is back, cancelled accepts left over are settled.
void IoUringBackend::on_accept(HandleId handle, Socket& s, int32_t result) {
  int32_t op_id = s.take_accept(result == kECANCELED);
  if (s.accepts_held == 1) s.settle_cancelled_accepts(handle, outbox_);
  // Last: adopt() may grow the socket table, which moves `s`.
  if (op_id >= 0) {
    outbox_.post({handle, EventKind::kCompleted, result >= 0 ? adopt(result) : result, op_id});
  } else if (result >= 0) {
    ::close(result);
  }
}

void IoUringBackend::on_stream_accept(HandleId handle, Socket& s, int32_t result, bool final) {
  if (result == kECANCELED) return;
  // A connection the kernel accepted after accept_stop() is delivered rather than dropped.
  int32_t accepted = result >= 0 ? adopt(result) : result;
  outbox_.post({handle, EventKind::kAccepted, accepted, 0});
  if (result < 0) {
    // EMFILE and friends: stop until JavaScript calls accept_start() again (it retries later),
    // or the multishot accept would fail again at once, for ever.
    s.streaming_accept = false;
    if (!final) cancel(handle, s, kAcceptStream);
  }
}

}  // namespace twinloop::iouring
