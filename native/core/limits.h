// The limits every backend shares, each stated once.
#pragma once

#include <cstddef>
#include <cstdint>

namespace twinloop {

// The most one operation moves: io_uring's lengths are 32-bit and completions report counts as
// int32, so every backend stops at 1 GiB and lib/ splits longer writes. Also the largest aligned
// buffer the binding allocates (allocAligned): no one operation could use more.
constexpr size_t kMaxTransfer = size_t{1} << 30;

// The most one streaming read (read_start) takes into the batch arena at a time, so that one busy
// socket leaves room in the batch for the others.
constexpr size_t kMaxStreamRead = 64 * 1024;

// The most events one kernel wait returns into a drain (epoll_wait, kevent,
// GetQueuedCompletionStatusEx); a full answer means more may be ready, and the drain asks again.
constexpr int kMaxKernelEvents = 256;

// The most drains the binding runs for one wake-up of Node's loop: beyond this, Node's loop runs
// its other work first (the benchmark's native echo uses the same, so wake-ups compare one to one).
constexpr int kMaxRoundsPerWake = 8;

// The longest timer delay a backend keeps: years, and small enough that the deadline in
// nanoseconds (now + delay) cannot wrap around into the past.
constexpr uint64_t kMaxTimerDelayMs = UINT64_MAX / 1'000'000u / 2;

}  // namespace twinloop
