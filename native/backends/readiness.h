// What the readiness backends (epoll, kqueue) share: the reactor over BSD sockets, and the
// proactor emulated on top of it as Boost.Asio does on Linux — a submitted operation waits in the
// socket's queue until the kernel says the socket is ready, then the syscall runs and the
// completion is reported. Also the loop's timers (one OS timer armed to a TimerHeap), regular
// files on the thread pool, and the events made outside a drain.
//
// This file knows no OS primitive. epoll.cc and kqueue.cc derive from ReadinessBackend and supply
// only what knows theirs: how interest is registered (update_interest), how ready events are
// fetched (fetch_ready) and decoded (dispatch_ready, which calls on_readable/on_writable back),
// how the loop is woken (signal_wake, and the wake function handed to the thread pool), how the
// OS timer is set (set_os_timer), and what a close must undo (before_close). Those hooks are called once per
// operation or per drain, never per byte; the derived classes are final, so their own drain loop
// calls their update_interest directly.
//
// Both primitives are used level-triggered: anything a drain leaves undone (a full batch, a full
// arena, the accept cap) is simply reported again by the next wait.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "../core/backend.h"
#include "../core/event_outbox.h"
#include "../core/handle_table.h"
#include "../core/socket_operations.h"
#include "../core/timer_heap.h"
#include "pooled_files.h"
#include "posix_socket.h"

namespace twinloop {

class ReadinessBackend : public PooledFileOperations<ReadinessBackend> {
 public:
  ReadinessBackend(const ReadinessBackend&) = delete;
  ReadinessBackend& operator=(const ReadinessBackend&) = delete;

  const BackendInfo& info() const override { return info_; }

  int listen(const SocketAddress& address, const ListenOptions& options) override;
  int connect(const SocketAddress& address, const SocketAddress* local, int32_t op_id) override;
  int shutdown(HandleId handle) override;
  int close(HandleId handle, bool reset) override;
  int address(HandleId handle, bool peer, SocketAddress& out) override;
  int set_socket_option(HandleId handle, SocketOption option, int value) override;
  int socket_option(HandleId handle, SocketOption option) override;

  int watch(HandleId handle, Interest interest) override;
  int try_read(HandleId handle, std::span<uint8_t> buffer) override;
  int try_write(HandleId handle, std::span<const uint8_t> buffer) override;
  int try_accept(HandleId handle) override;

  int submit_read(HandleId handle, std::span<uint8_t> buffer, int32_t op_id) override;
  int submit_write(HandleId handle, std::span<const uint8_t> buffer, int32_t op_id, WriteKeep keep) override;
  int submit_accept(HandleId handle, int32_t op_id) override;
  int set_streaming(HandleId handle, Stream stream, bool on) override;

  int cancel(HandleId handle, int32_t op_id) override;
  int start_timer(uint64_t delay_ms, int32_t op_id) override;

  void drain(BatchSink& sink) override;
  void flush() override { files_.flush(); }
  int wait(int timeout_ms) override;

  Stats stats() const override {
    Stats stats = stats_;
    stats.syscalls += files_.syscalls();
    stats.events = outbox_.events();
    return stats;
  }

 protected:
  // Per-socket state: the operations (core/socket_operations.h) plus what readiness needs, 104
  // bytes; the queues allocate only once an operation has to wait, so an idle connection costs
  // its slot and nothing else. The kernel never holds an operation here (every syscall finishes
  // inside its call), so the *_held counts stay 0 and cancel() always settles at once.
  struct Socket : SocketOperations {
    UniqueFd fd;
    // An error the readiness event reported with EOF, returned by the read that would see EOF or
    // the send that would fail with a bare EPIPE. kqueue(2): EVFILT_READ on a socket whose read
    // direction has shut down sets EV_EOF and returns the socket error, if any, in fflags. Once
    // something else has consumed so_error (a send that failed, getsockopt(SO_ERROR)), recv()
    // reports a plain EOF and send() EPIPE; a reset must still be ECONNRESET to the reader and the
    // writer, so the error is kept here. epoll reports none: it stays 0 there.
    int32_t eof_error = 0;
    Interest registered = Interest::kNone;  // what the kernel reports (or is about to)
    Interest added = Interest::kNone;       // kqueue: the directions whose knote exists, enabled or not
  };

  // `wake_from_pool` must be safe to call from any thread, with this object as its context; what
  // it uses must outlive the thread pool, which this class stops in its destructor (the derived
  // classes keep those descriptors in a base listed before this one, so they are destroyed after).
  ReadinessBackend(BackendInfo info, void (*wake_from_pool)(void* context))
      : info_(std::move(info)), files_(wake_from_pool, this) {}

  // --- what the OS file implements ---

  // Brings the kernel's registration of `s` in line with wanted_interest(s). Widening happens at
  // once; narrowing only for the directions in `narrow` — directions whose readiness arrived
  // with nobody waiting for it (see the OS files for why narrowing is lazy).
  virtual int update_interest(HandleId handle, Socket& s, Interest narrow) = 0;
  // Fetches up to kMaxKernelEvents ready events into the OS file's own array, waiting at most
  // `timeout_ms` (0: not at all, -1: no limit); returns their count, or a negative errno.
  virtual int fetch_ready(int timeout_ms) = 0;
  // Hands the first `count` fetched events to on_readable()/on_writable(), the timer's to
  // on_timer(), the wake's to deliver_deferred().
  virtual void dispatch_ready(int count, BatchSink& sink) = 0;
  // Makes poll_fd() readable so that Node's loop comes back for the events the outbox deferred;
  // once until the wake is consumed (wake_pending_).
  virtual void signal_wake() = 0;
  // Sets the OS timer to go off at `deadline` (monotonic_now_ns() scale).
  virtual int set_os_timer(uint64_t deadline) = 0;
  // Called on close, before the descriptor closes.
  virtual void before_close(Socket& s) = 0;

  // --- what the OS file calls ---

  static Interest wanted_interest(const Socket& s) {
    Interest want = Interest::kNone;
    if (has(s.watched, Interest::kReadable) || s.streaming_read || s.streaming_accept || !s.reads.empty() || !s.accepts.empty()) {
      want |= Interest::kReadable;
    }
    if (has(s.watched, Interest::kWritable) || !s.writes.empty() || s.connect_op >= 0) want |= Interest::kWritable;
    return want;
  }

  // The syscalls a ready socket was waiting for. `reported_error` is an error the readiness event
  // itself carried (kqueue: EV_EOF with fflags), for a connect whose SO_ERROR was consumed.
  void on_readable(HandleId handle, Socket& s, BatchSink& sink);
  void on_writable(HandleId handle, Socket& s, int32_t reported_error = 0);
  void on_timer();
  // The wake fired: completions of the thread pool go into the batch (the outbox's deferred
  // events went first, when the drain began).
  void deliver_deferred() { post_finished_files(); }

  HandleTable<Socket> sockets_;
  EventOutbox outbox_{[](void* self) { static_cast<ReadinessBackend*>(self)->signal_wake(); }, this};
  Stats stats_;
  bool wake_pending_ = false;

 private:
  int accept_one(int listen_fd);
  int read_some(Socket& s, std::span<uint8_t> buffer);
  int write_some(Socket& s, std::span<const uint8_t> buffer);
  void on_listener_readable(HandleId handle);
  int arm_timer();

  BackendInfo info_;
  TimerHeap timers_;
  uint64_t armed_deadline_ = 0;  // what the OS timer is set to; 0 = disarmed (or already fired)
  int fetched_ = 0;  // events a blocking wait() fetched, for the next drain to dispatch
  friend class PooledFileOperations<ReadinessBackend>;
  PooledFiles files_;  // last: its workers stop before anything else here goes
};

}  // namespace twinloop
