// One-shot timers of a loop, earliest deadline first: the backends keep a single OS timer (a
// timerfd, one IORING_OP_TIMEOUT, one EVFILT_TIMER) armed to earliest() instead of one kernel
// timer each, as libuv does with its timer heap.
//
// Why one OS timer for all: a per-request timeout is started and, nearly always, cancelled again;
// here both are O(log n) in user space with no syscall unless the earliest deadline changes,
// where a kernel timer each costs a submission and a completion per start and per cancel. It also
// gives every backend the same order: timers with equal deadlines fire in the order they were
// started (kernel timer queues promise no order between equal expiries).
//
// Deadlines are plain numbers (nanoseconds of the backend's monotonic clock): this file knows no
// OS. Cancelling is by operation id, through an id → position index kept beside the heap.
#pragma once

#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <utility>
#include <vector>

namespace twinloop {

class TimerHeap {
 public:
  bool empty() const { return heap_.empty(); }
  size_t size() const { return heap_.size(); }
  // The deadline the OS timer should be armed to; only when !empty().
  uint64_t earliest() const { return heap_.front().deadline; }
  bool contains(int32_t op_id) const { return index_.contains(op_id); }

  // False when a timer with this id is already pending (ids are unique per loop).
  bool push(uint64_t deadline, int32_t op_id) {
    if (!index_.emplace(op_id, heap_.size()).second) return false;
    heap_.push_back({deadline, next_sequence_++, op_id});
    sift_up(heap_.size() - 1);
    return true;
  }

  // False when no such timer is pending (it fired, was cancelled, or never existed).
  bool cancel(int32_t op_id) {
    auto found = index_.find(op_id);
    if (found == index_.end()) return false;
    size_t position = found->second;
    index_.erase(found);
    size_t last = heap_.size() - 1;
    if (position != last) {
      heap_[position] = heap_[last];
      index_[heap_[position].op_id] = position;
    }
    heap_.pop_back();
    if (position < heap_.size()) {
      sift_up(position);
      sift_down(position);
    }
    return true;
  }

  // Removes every timer whose deadline is <= now and calls fire(op_id) for each, in deadline
  // order (start order among equal deadlines).
  template <typename Fn>
  void pop_expired(uint64_t now, Fn&& fire) {
    while (!heap_.empty() && heap_.front().deadline <= now) {
      int32_t op_id = heap_.front().op_id;
      cancel(op_id);
      fire(op_id);
    }
  }

 private:
  struct Entry {
    uint64_t deadline;
    uint64_t sequence;  // tie-break: equal deadlines fire first-started first
    int32_t op_id;
  };

  static bool before(const Entry& a, const Entry& b) {
    return a.deadline != b.deadline ? a.deadline < b.deadline : a.sequence < b.sequence;
  }

  void place(size_t position, const Entry& entry) {
    heap_[position] = entry;
    index_[entry.op_id] = position;
  }

  void sift_up(size_t position) {
    Entry entry = heap_[position];
    while (position > 0) {
      size_t parent = (position - 1) / 2;
      if (!before(entry, heap_[parent])) break;
      place(position, heap_[parent]);
      position = parent;
    }
    place(position, entry);
  }

  void sift_down(size_t position) {
    Entry entry = heap_[position];
    size_t count = heap_.size();
    while (true) {
      size_t child = 2 * position + 1;
      if (child >= count) break;
      if (child + 1 < count && before(heap_[child + 1], heap_[child])) ++child;
      if (!before(heap_[child], entry)) break;
      place(position, heap_[child]);
      position = child;
    }
    place(position, entry);
  }

  std::vector<Entry> heap_;
  std::unordered_map<int32_t, size_t> index_;
  uint64_t next_sequence_ = 0;
};

}  // namespace twinloop
