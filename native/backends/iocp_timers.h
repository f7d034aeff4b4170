// The loop's timers on IOCP: a TimerHeap owned by the JavaScript thread, and the waiting thread's
// GetQueuedCompletionStatusEx timeout as the one OS timer (see core/timer_heap.h for why one).
//
// The heap never leaves the JavaScript thread. What the waiter needs is one number, the earliest
// deadline, published through an atomic; the waiter in turn publishes the deadline its current
// wait ends at. A start that moves the earliest deadline before that posts a wake packet, so the
// waiter recomputes its timeout; a later or cancelled deadline posts nothing (the waiter wakes at
// the old one, finds nothing due and waits again) — one packet per new earliest timer, none per
// cancel, as a per-request timeout is nearly always cancelled.
//
// Never early: the wait's timeout is rounded up to whole milliseconds, but Windows may still end
// it up to a tick before the deadline by QueryPerformanceCounter (the clock of uv_hrtime, hence of
// performance.now()); the waiter checks the clock and waits again for what is left.
#pragma once

#include <atomic>
#include <cstdint>

#include "../core/limits.h"
#include "../core/timer_heap.h"
#include "iocp_socket.h"

namespace twinloop::iocp {

inline uint64_t monotonic_now_ns() {
  static const uint64_t frequency = [] {
    LARGE_INTEGER f;
    QueryPerformanceFrequency(&f);
    return static_cast<uint64_t>(f.QuadPart);
  }();
  LARGE_INTEGER now;
  QueryPerformanceCounter(&now);
  auto ticks = static_cast<uint64_t>(now.QuadPart);
  return ticks / frequency * 1'000'000'000u + ticks % frequency * 1'000'000'000u / frequency;
}

class IocpTimers {
 public:
  static constexpr uint64_t kNever = UINT64_MAX;

  explicit IocpTimers(HANDLE port) : port_(port) {}

  // JavaScript thread. False when a timer with this id is already pending.
  bool start(uint64_t delay_ms, int32_t op_id) {
    if (delay_ms > kMaxTimerDelayMs) delay_ms = kMaxTimerDelayMs;
    if (!heap_.push(monotonic_now_ns() + delay_ms * 1'000'000u, op_id)) return false;
    publish();
    return true;
  }

  bool cancel(int32_t op_id) { return heap_.cancel(op_id); }  // the waiter may wake once for nothing

  // JavaScript thread, in drain(): fire(op_id) for every timer that is due, then publishes the
  // next deadline.
  template <typename Fire>
  void pop_expired(Fire&& fire) {
    if (heap_.empty()) return;
    heap_.pop_expired(monotonic_now_ns(), fire);
    publish();
  }

  // Waiting thread: the timeout for its next GetQueuedCompletionStatusEx, recorded as what it
  // waits for; `due` is set when the earliest deadline has come and JavaScript must drain.
  DWORD next_timeout(bool& due) {
    for (;;) {
      uint64_t deadline = earliest_.load();
      due = false;
      uint64_t target = deadline;
      if (deadline != kNever && deadline == fired_) target = kNever;  // JavaScript has not drained it yet
      waiting_for_.store(target);
      if (earliest_.load() != deadline) continue;  // a start raced with us: see publish()
      if (target == kNever) return INFINITE;
      uint64_t now = monotonic_now_ns();
      if (now >= target) {
        fired_ = target;
        due = true;
        waiting_for_.store(kNever);
        if (earliest_.load() != deadline) continue;
        return INFINITE;
      }
      uint64_t ms = (target - now + 999'999u) / 1'000'000u;
      return ms >= INFINITE ? INFINITE - 1 : static_cast<DWORD>(ms);
    }
  }

 private:
  // Either the waiter sees the new deadline when it re-reads earliest_, or this sees the deadline
  // the waiter settled on and wakes it: both sides store, then load the other's atomic.
  void publish() {
    uint64_t deadline = heap_.empty() ? kNever : heap_.earliest();
    if (earliest_.exchange(deadline) == deadline) return;
    if (deadline < waiting_for_.load()) PostQueuedCompletionStatus(port_, 0, to_key(CompletionKey::kTimerWake), nullptr);
  }

  HANDLE port_;
  TimerHeap heap_;                           // JavaScript thread only
  std::atomic<uint64_t> earliest_{kNever};   // written by JavaScript, read by the waiter
  std::atomic<uint64_t> waiting_for_{kNever};  // written by the waiter, read by JavaScript
  uint64_t fired_ = kNever;                  // waiter only: the deadline it last reported due
};

}  // namespace twinloop::iocp
