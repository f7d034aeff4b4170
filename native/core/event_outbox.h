// Where every event a backend makes goes, whatever made it: a kernel completion inside a drain, a
// close cancelling operations, a write done at submission, a thread-pool job. Inside a drain an
// event goes into the batch unless the batch is full; otherwise it waits here for the next drain,
// and the backend's wake makes Node's loop come back for it (once per batch: the backend's wake
// coalesces).
#pragma once

#include <cstdint>

#include "backend.h"
#include "errors.h"
#include "event_queue.h"

namespace twinloop {

class EventOutbox {
 public:
  // `wake` is called, with `context`, when an event is queued outside a drain and when a drain
  // ends with events left over.
  EventOutbox(void (*wake)(void* context), void* context) : wake_(wake), context_(context) {}
  EventOutbox(const EventOutbox&) = delete;
  EventOutbox& operator=(const EventOutbox&) = delete;

  void post(const Event& event) {
    ++events_;
    if (sink_ != nullptr && deferred_.empty() && !sink_->full()) {
      sink_->push(event);
      return;
    }
    deferred_.push(event);
    if (sink_ == nullptr) wake_(context_);
  }

  // A drain starts: what waited goes first, in order.
  void begin_drain(BatchSink& sink) {
    sink_ = &sink;
    deferred_.drain_into(sink);
  }
  void end_drain() {
    sink_ = nullptr;
    if (!deferred_.empty()) wake_(context_);
  }

  // The batch being drained (for the arena of streaming reads); null outside a drain.
  BatchSink* sink() const { return sink_; }
  // No event can go into the batch now: the drain should stop taking completions from the kernel
  // (they wait there, in order, instead of here).
  bool full() const { return sink_ == nullptr || sink_->full() || !deferred_.empty(); }
  bool has_deferred() const { return !deferred_.empty(); }

  uint64_t events() const { return events_; }

 private:
  void (*wake_)(void*);
  void* context_;
  BatchSink* sink_ = nullptr;
  EventQueue deferred_;
  uint64_t events_ = 0;
};

// cancel(-1, op_id), the same in every backend: a timer not yet fired is taken off `timers` and
// completes with ECANCELED now, through the outbox; one that already fired is -ENOENT.
template <typename Timers>
int cancel_timer(Timers& timers, int32_t op_id, EventOutbox& outbox) {
  if (!timers.cancel(op_id)) return kENOENT;
  outbox.post({-1, EventKind::kCompleted, kECANCELED, op_id});
  return 0;
}

}  // namespace twinloop
