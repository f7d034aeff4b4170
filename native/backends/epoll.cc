// The reactor on Linux: epoll readiness, then the non-blocking syscall (readiness.h has what it
// shares with kqueue, the emulated proactor among it).
//
// Level-triggered, with the registered mask changed only when what the socket needs changes (a
// write that had to wait, a paused reader) — an echo server streaming reads with writes that
// complete at once makes no epoll_ctl call per round trip. Level triggering also means anything
// this drain leaves undone (a full batch) is simply reported again by the next epoll_wait.
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>

#include <cerrno>
#include <utility>

#include "readiness.h"

namespace twinloop {
namespace {

constexpr uint64_t kWakeToken = ~uint64_t{0};
constexpr uint64_t kTimerToken = ~uint64_t{0} - 1;  // no HandleId is negative

uint32_t to_epoll_events(Interest interest) {
  return (has(interest, Interest::kReadable) ? uint32_t{EPOLLIN} : 0u) |
         (has(interest, Interest::kWritable) ? uint32_t{EPOLLOUT} : 0u);
}

// The descriptors the thread pool's workers wake the loop through. A base listed before
// ReadinessBackend, so that they close only after its destructor has stopped the workers.
struct EpollDescriptors {
  UniqueFd epoll_fd;
  UniqueFd wake_fd;
};

class EpollBackend final : private EpollDescriptors, public ReadinessBackend {
 public:
  EpollBackend(UniqueFd epoll, UniqueFd wake)
      : EpollDescriptors{std::move(epoll), std::move(wake)},
        ReadinessBackend({"epoll", "reactor", {"level-triggered", "lazy-epoll_ctl", "eventfd-wake"}}, wake_from_pool) {}

  int poll_fd() const override { return epoll_fd.get(); }

  int start_timer(uint64_t delay_ms, int32_t op_id) override {
    if (!timer_fd_) {
      // Made on first use: a loop without timers spends no descriptor on them.
      UniqueFd fd(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
      if (!fd) return -errno;
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = kTimerToken;
      stats_.syscalls += 2;
      if (epoll_ctl(epoll_fd.get(), EPOLL_CTL_ADD, fd.get(), &ev) != 0) return -errno;
      timer_fd_ = std::move(fd);
    }
    return ReadinessBackend::start_timer(delay_ms, op_id);
  }

 private:
  // Widening the mask happens at once. Narrowing waits until an unwanted event actually arrives
  // (`narrow`): a proactor read that completes is usually followed by the next read within the
  // same batch, and the epoll_ctl pair DEL + ADD per read would double the syscalls per message.
  // One mask covers both directions, so any `narrow` sets it to exactly what is wanted.
  int update_interest(HandleId handle, Socket& s, Interest narrow) override {
    Interest want = wanted_interest(s);
    if (want == s.registered || (narrow == Interest::kNone && !has(want, ~s.registered))) return 0;
    epoll_event ev{};
    ev.events = to_epoll_events(want);
    ev.data.u64 = static_cast<uint64_t>(handle);
    // An empty mask is a DEL, not a MOD: epoll reports EPOLLHUP whatever the mask, and a closed
    // peer would then wake the loop for ever.
    int op = want == Interest::kNone ? EPOLL_CTL_DEL : s.registered == Interest::kNone ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
    ++stats_.syscalls;
    if (epoll_ctl(epoll_fd.get(), op, s.fd.get(), &ev) != 0) return -errno;
    s.registered = want;
    return 0;
  }

  // No EPOLL_CTL_DEL: closing the only descriptor of the socket removes it from the epoll set.
  void before_close(Socket&) override {}

  int fetch_ready(int timeout_ms) override {
    ++stats_.syscalls;
    int n = epoll_wait(epoll_fd.get(), ready_, kMaxKernelEvents, timeout_ms);
    return n < 0 ? -errno : n;
  }

  void dispatch_ready(int count, BatchSink& sink) override {
    for (int i = 0; i < count; ++i) dispatch(ready_[i], sink);
  }

  // Deferred events have no kernel readiness behind them; the eventfd makes the epoll fd readable
  // so that Node's loop comes back for them.
  void signal_wake() override {
    if (wake_pending_) return;
    uint64_t one = 1;
    ++stats_.syscalls;
    if (::write(wake_fd.get(), &one, sizeof(one)) == sizeof(one)) wake_pending_ = true;
  }

  // Thread-pool workers signal the eventfd directly: write(2) is safe from any thread, and the
  // counter coalesces their wakes until the loop reads it.
  static void wake_from_pool(void* self) {
    uint64_t one = 1;
    auto* backend = static_cast<EpollBackend*>(static_cast<ReadinessBackend*>(self));
    [[maybe_unused]] ssize_t n = ::write(backend->wake_fd.get(), &one, sizeof(one));
  }

  void dispatch(const epoll_event& ready, BatchSink& sink) {
    if (ready.data.u64 == kTimerToken) {
      uint64_t expirations;
      ++stats_.syscalls;
      [[maybe_unused]] ssize_t n = ::read(timer_fd_.get(), &expirations, sizeof(expirations));
      on_timer();
      return;
    }
    if (ready.data.u64 == kWakeToken) {
      uint64_t count;
      ++stats_.syscalls;
      if (::read(wake_fd.get(), &count, sizeof(count)) == sizeof(count)) wake_pending_ = false;
      deliver_deferred();
      return;
    }
    auto handle = static_cast<HandleId>(ready.data.u64);
    Socket* s = sockets_.find(handle);
    if (!s) return;  // closed earlier in this batch
    bool failed = ready.events & (EPOLLERR | EPOLLHUP);
    Interest arrived = ((ready.events & EPOLLIN) ? Interest::kReadable : Interest::kNone) |
                       ((ready.events & EPOLLOUT) ? Interest::kWritable : Interest::kNone);
    // Readiness that nobody was waiting for: the moment to narrow the mask (see update_interest).
    // What this dispatch itself completes does not count — the next operation usually follows
    // within the batch.
    Interest wanted = wanted_interest(*s);
    bool unwanted = has(arrived, ~wanted) || (failed && wanted == Interest::kNone);
    if (has(arrived, Interest::kReadable) || failed) on_readable(handle, *s, sink);
    s = sockets_.find(handle);  // accepting may have moved it
    if (has(arrived, Interest::kWritable) || failed) on_writable(handle, *s);
    // Unlike a read, a write that had to wait is rarely followed by another: drop EPOLLOUT now.
    bool writes_done = has(arrived, Interest::kWritable) && !has(wanted_interest(*s), Interest::kWritable);
    update_interest(handle, *s, unwanted || writes_done ? Interest::kBoth : Interest::kNone);
  }

  // timerfd_settime with an absolute deadline on the clock the heap counts in.
  int set_os_timer(uint64_t deadline) override {
    itimerspec spec{};
    spec.it_value.tv_sec = static_cast<time_t>(deadline / 1'000'000'000u);
    spec.it_value.tv_nsec = static_cast<long>(deadline % 1'000'000'000u);
    if (spec.it_value.tv_sec == 0 && spec.it_value.tv_nsec == 0) spec.it_value.tv_nsec = 1;  // zero disarms
    ++stats_.syscalls;
    if (timerfd_settime(timer_fd_.get(), TFD_TIMER_ABSTIME, &spec, nullptr) != 0) return -errno;
    return 0;
  }

  UniqueFd timer_fd_;  // one for every timer of the loop, armed to the earliest (timer_heap.h)
  epoll_event ready_[kMaxKernelEvents];
};

std::unique_ptr<Backend> make_epoll_backend(int& error, std::string& reason) {
  UniqueFd epoll_fd(epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_fd) {
    error = -errno;
    reason = "epoll_create1 failed";
    return nullptr;
  }
  UniqueFd wake_fd(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!wake_fd) {
    error = -errno;
    reason = "eventfd failed";
    return nullptr;
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kWakeToken;
  if (epoll_ctl(epoll_fd.get(), EPOLL_CTL_ADD, wake_fd.get(), &ev) != 0) {
    error = -errno;
    reason = "epoll_ctl failed";
    return nullptr;
  }
  return std::make_unique<EpollBackend>(std::move(epoll_fd), std::move(wake_fd));
}

const BackendRegistration kRegistration({"epoll", make_epoll_backend, 10});

}  // namespace
}  // namespace twinloop
