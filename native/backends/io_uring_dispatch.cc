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

// The kernel runs at most ~20 deferred completions per GETEVENTS enter (IO_LOCAL_TW_DEFAULT_MAX,
// measured here: 100 ready recvs → 20 CQEs per enter); a drain enters again while the kernel says
// more wait (IORING_SQ_TASKRUN), up to this bound so a flood cannot starve Node's loop.
constexpr int kMaxEntersPerDrain = 32;
constexpr unsigned kTaskRunCap = 20;

void recycle_buffer(BufferRing& buffers, const io_uring_cqe& cqe) {
  if (cqe.flags & IORING_CQE_F_BUFFER) buffers.recycle(cqe.flags >> IORING_CQE_BUFFER_SHIFT);
}

}  // namespace

void IoUringBackend::drain(BatchSink& sink) {
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

void IoUringBackend::emit(BatchSink& sink, const Event& event) {
  ++stats_.events;
  if (sink.full()) {
    deferred_.push(event);
  } else {
    sink.push(event);
  }
}

void IoUringBackend::defer(const Event& event) {
  ++stats_.events;
  deferred_.push(event);
  if (!in_drain_) signal_wake();
}


// Events queued outside the kernel need the eventfd to turn readable.
void IoUringBackend::signal_wake() {
  if (wake_pending_) return;
  uint64_t one = 1;
  ++stats_.syscalls;
  if (::write(event_fd_.get(), &one, sizeof(one)) == sizeof(one)) wake_pending_ = true;
}

// Moves CQEs into the sink; false when it stopped because the batch is full (the CQEs left in
// the CQ, and the part of a recv already copied, are picked up by the next drain).
bool IoUringBackend::reap(BatchSink& sink, unsigned& reaped) {
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
void IoUringBackend::reap_discarding() {
  unsigned head = ring_.cq_head();
  for (unsigned tail = ring_.cq_tail(); head != tail; ++head) complete_one(ring_.cqe_at(head), nullptr);
  ring_.cq_advance(head - ring_.cq_head());
}

void IoUringBackend::wait_for_completion() {
  // What remains are cancellations under way; they normally land within microseconds.
  ++stats_.syscalls;
  ring_.wait(1, 100);
}

// Handles one CQE; false to keep it in the CQ for the next drain (its data did not all fit).
// `sink` is null at teardown.
bool IoUringBackend::complete_one(const io_uring_cqe& cqe, BatchSink* sink) {
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
    recycle_buffer(buffers_, cqe);
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

void IoUringBackend::complete_op(BatchSink* sink, HandleId handle, int32_t result, int32_t op_id) {
  Event event{handle, EventKind::kCompleted, result, op_id};
  if (sink != nullptr) {
    emit(*sink, event);
  } else {
    ++stats_.events;  // teardown: nobody will read it, the loop is closing
  }
}

// The socket was closed (or the backend is going away): every operation ends as ECANCELED, and
// whatever the kernel produced meanwhile is released.
void IoUringBackend::finish_cancelled(HandleId handle, Socket& s, Op op, const io_uring_cqe& cqe, BatchSink* sink) {
  recycle_buffer(buffers_, cqe);
  bool accepted = (op == kAccept || op == kAcceptStream) && cqe.res >= 0;
  if (accepted) {
    ++stats_.syscalls;
    ::close(cqe.res);
  }
  switch (op) {
    case kRecv:
      if (!s.reads.empty()) {
        complete_op(sink, handle, kECANCELED, s.reads.front().op_id);
        s.reads.erase(s.reads.begin());
      }
      break;
    case kSend:
      for (size_t i = 0; i < s.send_count && i < s.writes.size(); ++i) complete_op(sink, handle, kECANCELED, s.writes[i].op_id);
      s.writes.clear();
      release_batch(s);
      break;
    case kConnect:
      complete_op(sink, handle, kECANCELED, s.connect_op);
      s.connect_op = -1;
      break;
    case kAccept:
      if (!s.accepts.empty()) {
        complete_op(sink, handle, kECANCELED, s.accepts.front().op_id);
        s.accepts.erase(s.accepts.begin());
      }
      break;
    default:
      break;
  }
}

// One CQE of the streaming recv: its bytes go to the arena, and its buffer back to the ring at
// once. If the arena cannot take them all, the part that fits is delivered and the CQE stays at
// the head of the CQ with `partial_` recording how much of it is gone.
bool IoUringBackend::on_stream_data(HandleId handle, Socket& s, const io_uring_cqe& cqe, BatchSink& sink) {
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
  recycle_buffer(buffers_, cqe);
  if (cqe.res == kENOBUFS) {
    // The pool ran dry: nothing was lost (the bytes wait in the socket) and the multishot recv
    // ended; more buffers, and the re-arm on the final CQE, carry on.
    buffers_.grow();
    return true;
  }
  if (cqe.res == kECANCELED) return true;  // read_stop(); re-armed if read_start() came since
  // EOF or an error ends the stream (even after read_stop(): the kernel consumed it).
  emit(sink, {handle, EventKind::kData, cqe.res, 0});
  s.streaming_read = false;
  return true;
}

void IoUringBackend::on_read(HandleId handle, Socket& s, int32_t result, BatchSink& sink) {
  if (s.reads.empty()) return;
  int32_t op_id = s.reads.front().op_id;
  s.reads.erase(s.reads.begin());
  emit(sink, {handle, EventKind::kCompleted, result, op_id});
}

void IoUringBackend::on_sent(HandleId handle, Socket& s, int32_t result, BatchSink& sink) {
  size_t carried = std::min<size_t>(s.send_count, s.writes.size());
  release_batch(s);
  // A send that cancel() withdrew ends with -ECANCELED (-EINTR when an io-wq worker ran it), or
  // with the count it sent before that: not a broken connection.
  bool withdrawn = (s.cancelling & kSend) && (result == kECANCELED || result == kEINTR);
  if (withdrawn) result = 0;
  if (result < 0 || (!withdrawn && result == 0 && carried > 0 && s.writes.front().size > s.writes.front().sent)) {
    // The connection is broken: every queued write fails with the error, in order.
    int32_t error = result < 0 ? result : kEPIPE;
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

// Writes whose cancel() came while the kernel held them, now that it has let go (or a write
// that won the race has completed above): withdrawn if none of their bytes went out, else torn.
void IoUringBackend::settle_cancelled_writes(HandleId handle, Socket& s, BatchSink* sink) {
  for (size_t i = 0; i < s.writes.size();) {
    if (!s.writes[i].cancelled) {
      ++i;
    } else if (s.writes[i].sent == 0) {
      complete_or_defer(sink, {handle, EventKind::kCompleted, kECANCELED, s.writes[i].op_id});
      s.writes.erase(s.writes.begin() + static_cast<std::ptrdiff_t>(i));
    } else {
      return tear_writes(handle, s, i, sink);
    }
  }
}

// Write `index` was cancelled half-sent (only the head of the queue can be): it completes with
// the count the peer got, and every write queued behind it is withdrawn, since its bytes would
// land in the middle of a message (see Backend::cancel).
void IoUringBackend::tear_writes(HandleId handle, Socket& s, size_t index, BatchSink* sink) {
  complete_or_defer(sink, {handle, EventKind::kCompleted, static_cast<int32_t>(std::min<uint32_t>(s.writes[index].sent, INT32_MAX)),
                           s.writes[index].op_id});
  for (size_t i = index + 1; i < s.writes.size(); ++i) {
    complete_or_defer(sink, {handle, EventKind::kCompleted, kECANCELED, s.writes[i].op_id});
  }
  s.writes.resize(index);
  s.write_torn = true;
}

void IoUringBackend::complete_or_defer(BatchSink* sink, const Event& event) {
  if (sink != nullptr) {
    emit(*sink, event);
  } else {
    defer(event);
  }
}

// The TIMEOUT's CQE; `sink` is null at teardown, when nothing fires any more.
void IoUringBackend::on_timer(BatchSink* sink) {
  --in_flight_ops_;
  timers_.on_cqe(sink != nullptr ? monotonic_now_ns() : 0,
                 [&](int32_t op_id) { emit(*sink, {-1, EventKind::kCompleted, 0, op_id}); });
  if (sink != nullptr) arm_timer();
}

void IoUringBackend::on_ready(HandleId handle, Socket& s, int32_t result, BatchSink& sink) {
  if (result <= 0) return;  // cancelled or removed
  auto events = static_cast<uint32_t>(result);
  bool failed = events & (POLLERR | POLLHUP);
  if (has(s.watched, Interest::kReadable) && ((events & (POLLIN | POLLRDHUP)) || failed)) {
    s.recheck |= Interest::kReadable;
    emit(sink, {handle, EventKind::kReadable, 0, 0});
  }
  if (has(s.watched, Interest::kWritable) && ((events & POLLOUT) || failed)) {
    s.recheck |= Interest::kWritable;
    emit(sink, {handle, EventKind::kWritable, 0, 0});
  }
  mark_dirty(handle, s);  // for the re-check, after JavaScript has had its go
}

void IoUringBackend::on_connected(HandleId handle, Socket& s, int32_t result, BatchSink& sink) {
  int32_t op_id = s.connect_op;
  s.connect_op = -1;
  s.connect_address.reset();
  emit(sink, {handle, EventKind::kCompleted, result, op_id});
}

// A connection (or an error) goes to the oldest accept still wanted, or failing that to a
// cancelled one, which then completes normally; a cancellation to the oldest cancelled one, or to
// nobody. The accepts never number fewer than the kernel's, so a connection always has a taker.
// Once the last of a recall is back, cancelled accepts left over are settled.
void IoUringBackend::on_accept(HandleId handle, Socket& s, int32_t result, BatchSink& sink) {
  auto cancelled = [](const PendingAccept& accept) { return accept.cancelled; };
  auto taker = result == kECANCELED ? std::find_if(s.accepts.begin(), s.accepts.end(), cancelled)
                                    : std::find_if_not(s.accepts.begin(), s.accepts.end(), cancelled);
  if (taker == s.accepts.end() && result != kECANCELED) taker = s.accepts.begin();
  bool taken = taker != s.accepts.end();
  int32_t op_id = taken ? taker->op_id : 0;
  if (taken) s.accepts.erase(taker);
  if (s.accepts_in_flight == 1) {
    for (const PendingAccept& accept : s.accepts) {
      if (accept.cancelled) emit(sink, {handle, EventKind::kCompleted, kECANCELED, accept.op_id});
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

void IoUringBackend::on_stream_accept(HandleId handle, Socket& s, int32_t result, bool final, BatchSink& sink) {
  if (result == kECANCELED) return;
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

}  // namespace twinloop::iouring
