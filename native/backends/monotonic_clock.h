// The clock the POSIX backends measure timer deadlines on. CLOCK_MONOTONIC because it is what
// timerfd, an IORING_TIMEOUT_ABS timeout and libuv's own uv_hrtime (hence performance.now() in
// JavaScript) count on: a deadline computed here is never reached "early" by another of them, and
// a wall-clock step (NTP, a suspended laptop's clock set) neither fires nor delays a timer.
#pragma once

#include <time.h>

#include <cstdint>

#include "../core/limits.h"

namespace twinloop {

inline uint64_t monotonic_now_ns() {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<uint64_t>(now.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(now.tv_nsec);
}

// now + delay_ms, saturating: a delay of years must not wrap around into the past.
inline uint64_t deadline_after_ms(uint64_t delay_ms) {
  if (delay_ms > kMaxTimerDelayMs) delay_ms = kMaxTimerDelayMs;
  return monotonic_now_ns() + delay_ms * 1'000'000u;
}

}  // namespace twinloop
