// The reactor on macOS and FreeBSD: kevent readiness, then the non-blocking syscall (readiness.h
// has what it shares with epoll, the emulated proactor among it).
//
// Level-triggered (no EV_CLEAR on sockets), like the epoll backend: the Reactor API promises that
// a watched socket which stays readable is reported again, and the emulated proactor relies on it
// too — whatever a drain leaves undone (a full batch, a full arena, the accept cap) is simply
// returned again by the next kevent(). With EV_CLEAR each of those places would need its own
// bookkeeping to re-arm, and a missed one is a connection that hangs for ever.
//
// Interest changes are never a syscall of their own. kevent() takes a changelist and an eventlist
// in one call, so every EV_ADD/EV_DISABLE made while JavaScript handles a batch is queued in
// `changes_` and submitted by the flush() the binding makes after that batch (or by the next
// kevent() of a drain): one kevent() per batch, however many sockets changed. As on epoll, the
// filters are widened at once and narrowed lazily, when an event nobody waits for arrives; with
// kqueue, EVFILT_READ and EVFILT_WRITE are separate knotes, so each is narrowed on its own.
#include <sys/types.h>
#include <sys/event.h>
#include <sys/time.h>
#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <utility>
#include <vector>

#include "monotonic_clock.h"
#include "readiness.h"

namespace twinloop {
namespace {

constexpr uintptr_t kWakeIdent = 0;     // EVFILT_USER idents are their own namespace, not fds
constexpr timespec kNoWait{0, 0};

// A kevent carries the HandleId in udata; the wake event carries a value no handle can have.
void* to_udata(intptr_t value) { return reinterpret_cast<void*>(value); }
intptr_t from_udata(void* udata) { return reinterpret_cast<intptr_t>(udata); }
constexpr intptr_t kWakeUdata = -1;
// The one EVFILT_TIMER of the loop, armed to the earliest deadline of the timer heap (see
// core/timer_heap.h). Its ident lives in EVFILT_TIMER's own namespace, not the descriptors'.
constexpr uintptr_t kTimerIdent = 1;
constexpr intptr_t kTimerUdata = -2;

#ifdef EVFILT_USER
constexpr int16_t kWakeFilter = EVFILT_USER;
#else
constexpr int16_t kWakeFilter = EVFILT_READ;
#endif

// The descriptors the thread pool's workers wake the loop through. A base listed before
// ReadinessBackend, so that they close only after its destructor has stopped the workers.
struct KqueueDescriptors {
  UniqueFd kqueue_fd;
  UniqueFd wake_read;   // the self-pipe, only where EVFILT_USER is missing
  UniqueFd wake_write;
};

class KqueueBackend final : private KqueueDescriptors, public ReadinessBackend {
 public:
  KqueueBackend(UniqueFd kqueue, UniqueFd read_end, UniqueFd write_end)
      : KqueueDescriptors{std::move(kqueue), std::move(read_end), std::move(write_end)},
#ifdef EVFILT_USER
        ReadinessBackend({"kqueue", "reactor", {"level-triggered", "changelist-batching", "evfilt-user-wake"}},
                         wake_from_pool) {
#else
        ReadinessBackend({"kqueue", "reactor", {"level-triggered", "changelist-batching", "pipe-wake"}},
                         wake_from_pool) {
#endif
    changes_.reserve(kMaxKernelEvents);
  }

  // kqueue(2): a kqueue descriptor can itself be watched for readability (poll, select, or
  // EVFILT_READ in libuv's own kqueue), and is readable while events are pending.
  int poll_fd() const override { return kqueue_fd.get(); }

  // Submits the queued changes in one kevent(). EV_RECEIPT on each makes the kernel answer every
  // change in the eventlist instead of also collecting ready events, which flush() could not
  // deliver; an eventlist as long as the changelist means no change can be left unapplied.
  void flush() override {
    ReadinessBackend::flush();
    if (changes_.empty()) return;
    std::vector<struct kevent> changes;
    changes.swap(changes_);  // errors handled below may queue new changes
    for (auto& change : changes) change.flags |= EV_RECEIPT;
    receipts_.resize(changes.size());
    ++stats_.syscalls;
    int n = kevent(kqueue_fd.get(), changes.data(), static_cast<int>(changes.size()), receipts_.data(),
                   static_cast<int>(receipts_.size()), &kNoWait);
    for (int i = 0; i < n; ++i) {
      const struct kevent& receipt = receipts_[static_cast<size_t>(i)];
      if ((receipt.flags & EV_ERROR) && receipt.data != 0) on_change_error(receipt);
    }
    changes.clear();
    if (changes_.empty()) changes_.swap(changes);  // keep the grown buffer: no allocation per batch
  }

 private:
  int fetch_ready(int timeout_ms) override {
    // kqueue(2): a change that fails is returned as an EV_ERROR event only while the eventlist
    // has room for it; otherwise kevent() fails and the changes after it are not applied. A
    // changelist longer than the eventlist therefore goes through flush(), which makes room.
    if (changes_.size() > static_cast<size_t>(kMaxKernelEvents)) flush();
    timespec timeout{timeout_ms / 1000, (timeout_ms % 1000) * 1'000'000L};
    ++stats_.syscalls;
    int n = kevent(kqueue_fd.get(), changes_.data(), static_cast<int>(changes_.size()), ready_, kMaxKernelEvents,
                   timeout_ms < 0 ? nullptr : &timeout);
    changes_.clear();
    return n < 0 ? -errno : n;
  }

  void dispatch_ready(int count, BatchSink& sink) override {
    for (int i = 0; i < count; ++i) dispatch(ready_[i], sink);
  }

  // Thread-pool workers wake the loop themselves: kevent(2) and write(2) are safe from any thread,
  // while the changelist is the loop thread's alone.
  static void wake_from_pool(void* context) {
    auto* self = static_cast<KqueueBackend*>(static_cast<ReadinessBackend*>(context));
#ifdef EVFILT_USER
    struct kevent trigger{};
    EV_SET(&trigger, kWakeIdent, EVFILT_USER, 0, NOTE_TRIGGER, 0, to_udata(kWakeUdata));
    kevent(self->kqueue_fd.get(), &trigger, 1, nullptr, 0, nullptr);
#else
    uint8_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(self->wake_write.get(), &one, sizeof(one));
#endif
  }

  void queue_change(int fd, int16_t filter, uint16_t flags, HandleId handle) {
    struct kevent change{};
    EV_SET(&change, static_cast<uintptr_t>(fd), filter, flags, 0, 0, to_udata(handle));
    changes_.push_back(change);
  }

  // Widening happens at once; a filter is narrowed only when `narrow` names it, i.e. when one of
  // its events arrived that nobody waits for any more. A proactor read that completes is usually
  // followed by the next read within the same batch, and toggling the filter per read would
  // put two changes per message into every kevent(). EV_DISABLE rather than EV_DELETE keeps the
  // knote, so enabling it again (a write that has to wait, again) is a bare EV_ENABLE: no new
  // knote, no filter attach in the kernel. EV_ADD is sent once per knote.
  int update_interest(HandleId handle, Socket& s, Interest narrow) override {
    Interest want = wanted_interest(s);
    Interest enable = want & ~s.registered;
    Interest disable = s.registered & ~want & narrow;
    if ((enable | disable) == Interest::kNone) return 0;
    int fd = s.fd.get();
    for (auto [bit, filter] : {std::pair{Interest::kReadable, EVFILT_READ}, std::pair{Interest::kWritable, EVFILT_WRITE}}) {
      if (has(enable, bit)) queue_change(fd, static_cast<int16_t>(filter), has(s.added, bit) ? EV_ENABLE : EV_ADD, handle);
      if (has(disable, bit)) queue_change(fd, static_cast<int16_t>(filter), EV_DISABLE, handle);
    }
    s.added |= enable;
    s.registered = (s.registered | enable) & ~disable;
    return 0;
  }

  // No EV_DELETE: kqueue(2) says closing a descriptor removes every kevent that references it.
  // Changes still queued for it must go, though: after close() the number is free, and the next
  // socket to get it would be registered with this handle's udata.
  void before_close(Socket& s) override {
    int fd = s.fd.get();
    std::erase_if(changes_, [fd](const struct kevent& change) {
      return change.ident == static_cast<uintptr_t>(fd) && from_udata(change.udata) != kWakeUdata &&
             change.filter != EVFILT_TIMER;
    });
  }

  // Deferred events have no kernel readiness behind them; triggering the user event makes the
  // kqueue readable so that Node's loop comes back for them. The trigger rides in the changelist
  // like any other change: the binding flushes after every batch and before Node's loop blocks.
  void signal_wake() override {
    if (wake_pending_) return;
#ifdef EVFILT_USER
    struct kevent trigger{};
    EV_SET(&trigger, kWakeIdent, EVFILT_USER, 0, NOTE_TRIGGER, 0, to_udata(kWakeUdata));
    changes_.push_back(trigger);
    wake_pending_ = true;
#else
    uint8_t one = 1;
    ++stats_.syscalls;
    if (::write(wake_write.get(), &one, sizeof(one)) == sizeof(one)) wake_pending_ = true;
#endif
  }

  void on_wake() {
#ifndef EVFILT_USER
    uint8_t bytes[64];
    ++stats_.syscalls;
    while (::read(wake_read.get(), bytes, sizeof(bytes)) == static_cast<ssize_t>(sizeof(bytes))) ++stats_.syscalls;
#endif
    // EV_CLEAR on the user event: retrieving it reset it, so the next trigger wakes the loop again.
    wake_pending_ = false;
    deliver_deferred();
  }

  void dispatch(const struct kevent& ready, BatchSink& sink) {
    intptr_t tag = from_udata(ready.udata);
    if (tag == kWakeUdata && ready.filter == kWakeFilter) {
      on_wake();
      return;
    }
    if (ready.filter == EVFILT_TIMER) {
      if (!(ready.flags & EV_ERROR)) on_timer();
      return;
    }
    auto handle = static_cast<HandleId>(tag);
    Socket* s = sockets_.find(handle);
    if (!s) return;  // closed earlier in this batch
    if (ready.flags & EV_ERROR) {
      if (ready.data != 0) on_change_error(ready);
      return;
    }
    if (ready.filter == EVFILT_READ) {
      if ((ready.flags & EV_EOF) && ready.fflags != 0 && !s->listener) s->eof_error = -static_cast<int32_t>(ready.fflags);
      on_readable(handle, *s, sink);
      s = sockets_.find(handle);  // accepting may have moved it
      update_interest(handle, *s, Interest::kReadable);
    } else if (ready.filter == EVFILT_WRITE) {
      // A refused connect is EVFILT_WRITE with EV_EOF and the error in fflags; SO_ERROR says the
      // same unless something consumed it first.
      int32_t reported = (ready.flags & EV_EOF) && ready.fflags != 0 ? -static_cast<int32_t>(ready.fflags) : 0;
      on_writable(handle, *s, reported);
      update_interest(handle, *s, Interest::kWritable);
    }
  }

  // A change the kernel refused leaves its filter unarmed, so nothing would ever wake what waits
  // on it: the operations waiting in that direction fail with the error, and reactor watchers
  // are called so that their try_* sees the socket's real state.
  void on_change_error(const struct kevent& receipt) {
    auto handle = static_cast<HandleId>(from_udata(receipt.udata));
    Socket* s = sockets_.find(handle);
    // ENOENT: an EV_DISABLE whose knote was never added, because that EV_ADD failed (already
    // reported) — nothing waits on it.
    if (!s || receipt.data == ENOENT) return;
    int error = -static_cast<int>(receipt.data);
    if (receipt.filter == EVFILT_READ) {
      s->registered &= ~Interest::kReadable;
      s->added &= ~Interest::kReadable;
      s->fail_reads(handle, error, outbox_);
      if (s->streaming_read) outbox_.post({handle, EventKind::kData, error, 0});
      if (s->streaming_accept) outbox_.post({handle, EventKind::kAccepted, error, 0});
      s->streaming_read = s->streaming_accept = false;
      if (has(s->watched, Interest::kReadable)) outbox_.post({handle, EventKind::kReadable, 0, 0});
    } else if (receipt.filter == EVFILT_WRITE) {
      s->registered &= ~Interest::kWritable;
      s->added &= ~Interest::kWritable;
      if (s->connect_op >= 0) outbox_.post({handle, EventKind::kCompleted, error, std::exchange(s->connect_op, -1)});
      s->fail_writes(handle, error, outbox_);
      if (has(s->watched, Interest::kWritable)) outbox_.post({handle, EventKind::kWritable, 0, 0});
    }
  }

  // Queues (re)arming the one-shot EVFILT_TIMER to `deadline`. It rides in the changelist: arming
  // costs no syscall of its own. The delay is rounded up, so that it never fires before the
  // deadline, and is at least one unit: kqueue(2) gives no meaning to a zero period.
  int set_os_timer(uint64_t deadline) override {
    uint64_t now = monotonic_now_ns();
    uint64_t delay_ns = deadline > now ? deadline - now : 0;
#ifdef NOTE_USECONDS
    constexpr uint32_t kUnit = NOTE_USECONDS;
    constexpr uint64_t kUnitNs = 1'000;
#else
    constexpr uint32_t kUnit = 0;  // milliseconds
    constexpr uint64_t kUnitNs = 1'000'000;
#endif
    auto delay = static_cast<int64_t>(std::max<uint64_t>(1, (delay_ns + kUnitNs - 1) / kUnitNs));
    struct kevent change{};
    EV_SET(&change, kTimerIdent, EVFILT_TIMER, EV_ADD | EV_ONESHOT, kUnit, delay, to_udata(kTimerUdata));
    changes_.push_back(change);
    return 0;
  }

  std::vector<struct kevent> changes_;   // the changelist of the next kevent()
  std::vector<struct kevent> receipts_;  // flush()'s eventlist, grown once
  struct kevent ready_[kMaxKernelEvents];
};

std::unique_ptr<Backend> make_kqueue_backend(int& error, std::string& reason) {
  // No FD_CLOEXEC needed: kqueue(2) descriptors are not inherited by a child created with fork().
  UniqueFd kqueue_fd(kqueue());
  if (!kqueue_fd) {
    error = -errno;
    reason = "kqueue failed";
    return nullptr;
  }
  UniqueFd wake_read;
  UniqueFd wake_write;
  struct kevent wake{};
#ifdef EVFILT_USER
  EV_SET(&wake, kWakeIdent, EVFILT_USER, EV_ADD | EV_CLEAR, 0, 0, to_udata(kWakeUdata));
#else
  int fds[2];
  if (::pipe(fds) != 0) {
    error = -errno;
    reason = "pipe failed";
    return nullptr;
  }
  wake_read.reset(fds[0]);
  wake_write.reset(fds[1]);
  for (int fd : fds) {
    if (fcntl(fd, F_SETFL, O_NONBLOCK) != 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
      error = -errno;
      reason = "fcntl failed";
      return nullptr;
    }
  }
  EV_SET(&wake, static_cast<uintptr_t>(fds[0]), EVFILT_READ, EV_ADD, 0, 0, to_udata(kWakeUdata));
#endif
  if (kevent(kqueue_fd.get(), &wake, 1, nullptr, 0, nullptr) != 0) {
    error = -errno;
    reason = "kevent failed to register the wake event";
    return nullptr;
  }
  return std::make_unique<KqueueBackend>(std::move(kqueue_fd), std::move(wake_read), std::move(wake_write));
}

const BackendRegistration kRegistration({"kqueue", make_kqueue_backend, 10});

}  // namespace
}  // namespace twinloop
