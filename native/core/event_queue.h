// Events a backend produced while the batch was full, or outside a drain (a close cancelling
// operations, a write completing at submission): delivered first by the next drain.
#pragma once

#include <vector>

#include "backend.h"

namespace twinloop {

class EventQueue {
 public:
  bool empty() const { return head_ == events_.size(); }
  void push(const Event& event) { events_.push_back(event); }

  // Moves queued events into the sink until it is full.
  void drain_into(BatchSink& sink) {
    while (head_ < events_.size() && !sink.full()) sink.push(events_[head_++]);
    if (head_ == events_.size()) {
      events_.clear();
      head_ = 0;
    }
  }

 private:
  std::vector<Event> events_;
  size_t head_ = 0;
};

}  // namespace twinloop
