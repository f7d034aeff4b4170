// The loop's timers on io_uring: a TimerHeap, and one IORING_OP_TIMEOUT armed to its earliest
// deadline (absolute, CLOCK_MONOTONIC) instead of one TIMEOUT per timer. Why one: see
// core/timer_heap.h — a start or a cancel costs no SQE and no CQE unless the earliest deadline
// moves, timers with equal deadlines fire in start order as on epoll, and a thousand
// per-request timeouts do not put two thousand entries through the rings. When an earlier
// deadline arrives the armed TIMEOUT is moved in place (IORING_OP_TIMEOUT_REMOVE with
// IORING_TIMEOUT_UPDATE, Linux 5.11); a cancelled timer leaves it armed, and it fires once for
// nothing rather than costing an SQE per cancel.
//
// The kernel reads the timespec of both opcodes when it prepares the SQE, inside the
// io_uring_enter that submits it (no SQPOLL here), so one timespec each, kept here, suffices.
#pragma once

#include <linux/io_uring.h>
#include <linux/time_types.h>

#include <cstdint>

#include "../core/timer_heap.h"
#include "io_uring_sqe.h"

namespace twinloop::iouring {

class RingTimers {
 public:
  static constexpr uint64_t kUserData = tag(kTimer);

  bool armed() const { return armed_; }
  bool cancel(int32_t op_id) { return heap_.cancel(op_id); }
  bool push(uint64_t deadline, int32_t op_id) { return heap_.push(deadline, op_id); }

  // Arms or moves the TIMEOUT if the earliest deadline is earlier than what is armed. `get_sqe`
  // returns a zeroed SQE or null (SQ full). Returns true when a new TIMEOUT went in flight (the
  // backend counts it until its CQE).
  template <typename GetSqe>
  bool arm(GetSqe&& get_sqe) {
    if (heap_.empty() || (armed_ && armed_deadline_ <= heap_.earliest())) return false;
    io_uring_sqe* entry = get_sqe();
    if (entry == nullptr) return false;  // retried by the next start or fire
    uint64_t deadline = heap_.earliest();
    if (armed_) {
      set(update_spec_, deadline);
      prep_timeout_update(entry, kUserData, &update_spec_, IORING_TIMEOUT_ABS);
      set_tag(entry, tag(kIgnore));
      armed_deadline_ = deadline;
      return false;
    }
    set(timeout_spec_, deadline);
    prep_timeout(entry, &timeout_spec_, IORING_TIMEOUT_ABS);
    set_tag(entry, kUserData);
    armed_ = true;
    armed_deadline_ = deadline;
    return true;
  }

  // The TIMEOUT's CQE (-ETIME when it fired, -ECANCELED when removed): it is no longer in flight.
  // Calls fire(op_id) for every timer due by `now`, in order; the caller then re-arms.
  template <typename Fire>
  void on_cqe(uint64_t now, Fire&& fire) {
    armed_ = false;
    heap_.pop_expired(now, fire);
  }

  // Teardown: removes the armed TIMEOUT so that its CQE comes now, not at its deadline.
  template <typename GetSqe>
  void disarm(GetSqe&& get_sqe) {
    if (!armed_) return;
    io_uring_sqe* entry = get_sqe();
    if (entry == nullptr) return;
    prep_timeout_remove(entry, kUserData);
    set_tag(entry, tag(kIgnore));
  }

 private:
  static void set(__kernel_timespec& spec, uint64_t deadline_ns) {
    spec.tv_sec = static_cast<int64_t>(deadline_ns / 1'000'000'000u);
    spec.tv_nsec = static_cast<long long>(deadline_ns % 1'000'000'000u);
  }

  TimerHeap heap_;
  __kernel_timespec timeout_spec_{};
  __kernel_timespec update_spec_{};
  uint64_t armed_deadline_ = 0;
  bool armed_ = false;  // a TIMEOUT is in the kernel (until its CQE is reaped)
};

}  // namespace twinloop::iouring
