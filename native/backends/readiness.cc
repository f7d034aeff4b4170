#include "readiness.h"

#include <algorithm>
#include <cerrno>
#include <utility>

#include "monotonic_clock.h"

namespace twinloop {

namespace {

constexpr int kMaxAcceptsPerWake = 64;  // so one busy listener cannot monopolise a drain

}  // namespace

int ReadinessBackend::listen(const SocketAddress& address, const ListenOptions& options) {
  UniqueFd fd;
  stats_.syscalls += 4;  // socket, setsockopt, bind, listen
  if (int rc = open_listener(address, options, fd); rc < 0) return rc;
  Socket socket;
  socket.fd = std::move(fd);
  socket.listener = true;
  return sockets_.insert(std::move(socket));
}

int ReadinessBackend::connect(const SocketAddress& address, const SocketAddress* local, int32_t op_id) {
  UniqueFd fd;
  stats_.syscalls += local != nullptr ? 4 : 3;
  int rc = start_connect(address, local, fd);
  if (rc < 0 && rc != kEINPROGRESS) return rc;
  Socket socket;
  socket.fd = std::move(fd);
  HandleId handle = sockets_.insert(std::move(socket));
  if (handle < 0) return handle;
  if (rc == 0) {
    outbox_.post({handle, EventKind::kCompleted, 0, op_id});
  } else {
    Socket* s = sockets_.find(handle);
    s->connect_op = op_id;
    update_interest(handle, *s, Interest::kNone);
  }
  return handle;
}

int ReadinessBackend::shutdown(HandleId handle) {
  return sockets_.with(handle, [&](Socket& s) {
    ++stats_.syscalls;
    return ::shutdown(s.fd.get(), SHUT_WR) == 0 ? 0 : -errno;
  });
}

int ReadinessBackend::close(HandleId handle, bool reset) {
  Socket* s = sockets_.find(handle);
  if (!s) return kEBADF;
  if (reset) set_reset_on_close(s->fd.get());
  s->withdraw_unheld(handle, outbox_);
  before_close(*s);
  ++stats_.syscalls;
  sockets_.erase(handle);
  return 0;
}

int ReadinessBackend::address(HandleId handle, bool peer, SocketAddress& out) {
  return sockets_.with(handle, [&](Socket& s) { return socket_address(s.fd.get(), peer, out); });
}

int ReadinessBackend::set_socket_option(HandleId handle, SocketOption option, int value) {
  return sockets_.with(handle, [&](Socket& s) {
    ++stats_.syscalls;
    return twinloop::set_socket_option(s.fd.get(), option, value);
  });
}

int ReadinessBackend::socket_option(HandleId handle, SocketOption option) {
  return sockets_.with(handle, [&](Socket& s) { return twinloop::socket_option(s.fd.get(), option); });
}

int ReadinessBackend::watch(HandleId handle, Interest interest) {
  return sockets_.with(handle, [&](Socket& s) {
    s.watched = interest;
    return update_interest(handle, s, Interest::kNone);
  });
}

int ReadinessBackend::try_read(HandleId handle, std::span<uint8_t> buffer) {
  return sockets_.with(handle, [&](Socket& s) {
    int rc = s.check_read();
    return rc < 0 ? rc : read_some(s, buffer);
  });
}

int ReadinessBackend::try_write(HandleId handle, std::span<const uint8_t> buffer) {
  return sockets_.with(handle, [&](Socket& s) {
    int rc = s.check_try_write();
    return rc < 0 ? rc : write_some(s, buffer);
  });
}

int ReadinessBackend::try_accept(HandleId handle) {
  return sockets_.with(handle, [&](Socket& s) {
    int rc = s.check_accept();
    return rc < 0 ? rc : accept_one(s.fd.get());
  });
}

int ReadinessBackend::submit_read(HandleId handle, std::span<uint8_t> buffer, int32_t op_id) {
  return sockets_.with(handle, [&](Socket& s) {
    if (int rc = s.check_read(); rc < 0) return rc;
    s.reads.push_back({buffer, op_id});
    return update_interest(handle, s, Interest::kNone);
  });
}

int ReadinessBackend::submit_write(HandleId handle, std::span<const uint8_t> buffer, int32_t op_id, WriteKeep keep) {
  Socket* s = sockets_.find(handle);
  if (!s) return kEBADF;
  if (int rc = s->check_write(); rc < 0) return rc;
  size_t size = buffer.size();
  if (s->writes.empty()) {
    // Speculative send: a socket with room takes the bytes now, saving a wait for writability.
    while (!buffer.empty()) {
      int n = write_some(*s, buffer);
      if (n == kEAGAIN) break;
      if (n < 0) return n;
      buffer = buffer.subspan(static_cast<size_t>(n));
    }
    if (buffer.empty()) return 1;
  }
  if (int rc = s->queue_write(buffer, op_id, size - buffer.size(), keep); rc < 0) return rc;
  if (int rc = update_interest(handle, *s, Interest::kNone); rc < 0) {
    // Nothing would send the rest: the write fails now, and its kept copy is not used again.
    s->unqueue_last_write();
    return rc;
  }
  return 0;
}

int ReadinessBackend::submit_accept(HandleId handle, int32_t op_id) {
  return sockets_.with(handle, [&](Socket& s) {
    if (int rc = s.check_accept(); rc < 0) return rc;
    s.accepts.push_back({op_id});
    return update_interest(handle, s, Interest::kNone);
  });
}

int ReadinessBackend::set_streaming(HandleId handle, Stream stream, bool on) {
  return sockets_.with(handle, [&](Socket& s) {
    if (int rc = s.set_streaming(stream, on); rc < 0) return rc;
    return update_interest(handle, s, Interest::kNone);
  });
}

// Timers and cancellation. No operation here ever reached the kernel (core/socket_operations.h),
// so cancelling one is taking it off the socket's queue; its -ECANCELED goes out through the
// outbox like every completion made outside a drain.
int ReadinessBackend::cancel(HandleId handle, int32_t op_id) {
  // The OS timer stays armed: firing once for nothing costs less than re-arming it per cancel
  // (a timerfd_settime on epoll, a change on kqueue), and per-request timeouts are nearly always
  // cancelled.
  if (handle == -1) return cancel_timer(timers_, op_id, outbox_);
  return sockets_.with(handle, [&](Socket& s) { return s.cancel(handle, op_id, outbox_) == CancelOutcome::kNotFound ? kENOENT : 0; });
}

int ReadinessBackend::start_timer(uint64_t delay_ms, int32_t op_id) {
  if (!timers_.push(deadline_after_ms(delay_ms), op_id)) return kEEXIST;
  return arm_timer();
}

// Arms the OS timer to the earliest deadline unless it is already armed to go off no later. One OS
// timer for every timer of the loop: see timer_heap.h.
int ReadinessBackend::arm_timer() {
  if (timers_.empty() || (armed_deadline_ != 0 && armed_deadline_ <= timers_.earliest())) return 0;
  uint64_t deadline = timers_.earliest();
  if (int rc = set_os_timer(deadline); rc < 0) return rc;
  armed_deadline_ = deadline;
  return 0;
}

void ReadinessBackend::on_timer() {
  armed_deadline_ = 0;
  timers_.pop_expired(monotonic_now_ns(), [&](int32_t op_id) { outbox_.post({-1, EventKind::kCompleted, 0, op_id}); });
  arm_timer();
}

void ReadinessBackend::drain(BatchSink& sink) {
  outbox_.begin_drain(sink);
  post_finished_files();
  while (!sink.full()) {
    int count = fetched_ > 0 ? std::exchange(fetched_, 0) : fetch_ready(0);
    if (count <= 0) break;
    dispatch_ready(count, sink);
    if (count < kMaxKernelEvents) break;
  }
  outbox_.end_drain();
}

// The wait is the fetch: the events it returns are the next drain's first, so a loop that owns
// its thread makes one epoll_wait/kevent per wake, as a C reactor does.
int ReadinessBackend::wait(int timeout_ms) {
  files_.flush();  // not flush(): kqueue's changelist goes with the fetch's own kevent
  if (fetched_ > 0) return 0;
  int count = fetch_ready(timeout_ms);
  if (count == kEINTR) return 0;
  if (count < 0) return count;
  fetched_ = count;
  return 0;
}

int ReadinessBackend::accept_one(int listen_fd) {
  ++stats_.syscalls;
  int fd = accept_connection(listen_fd);
  if (fd < 0) return fd;
  Socket socket;
  socket.fd.reset(fd);
  return sockets_.insert(std::move(socket));
}

// recv(), with the error an EOF was reported with (Socket::eof_error) in place of the EOF.
int ReadinessBackend::read_some(Socket& s, std::span<uint8_t> buffer) {
  ++stats_.syscalls;
  int n = recv_some(s.fd.get(), buffer);
  if (n == 0 && s.eof_error != 0) return std::exchange(s.eof_error, 0);
  if (n < 0 && n != kEAGAIN) s.eof_error = 0;  // the kernel reported it itself
  return n;
}

// send(), with the error an EOF was reported with in place of EPIPE: once so_error is consumed, a
// send to a reset peer fails with a bare EPIPE, and the writer must still learn of the reset.
int ReadinessBackend::write_some(Socket& s, std::span<const uint8_t> buffer) {
  ++stats_.syscalls;
  int n = send_some(s.fd.get(), buffer);
  if (n == kEPIPE && s.eof_error != 0) return std::exchange(s.eof_error, 0);
  return n;
}

void ReadinessBackend::on_readable(HandleId handle, Socket& s, BatchSink& sink) {
  if (s.listener) {
    on_listener_readable(handle);
    return;
  }
  if (!s.reads.empty()) {
    int n = read_some(s, s.reads.front().buffer);
    if (n != kEAGAIN) s.complete_read(handle, n, outbox_);
  } else if (s.streaming_read) {
    std::span<uint8_t> space = sink.arena_space(kMaxStreamRead);
    if (!space.empty()) {  // else the batch is full of data: the next wait reports it again
      int n = read_some(s, space);
      if (n != kEAGAIN) {
        int32_t offset = n > 0 ? sink.commit_arena(static_cast<size_t>(n)) : 0;
        // After EOF or an error the socket stays readable for ever: stop streaming it.
        if (n <= 0) s.streaming_read = false;
        outbox_.post({handle, EventKind::kData, n, offset});
      }
    }
  }
  if (has(s.watched, Interest::kReadable)) outbox_.post({handle, EventKind::kReadable, 0, 0});
}

// Accepting inserts into the handle table, which may move every Socket: the listener is looked up
// again after each accept instead of held by reference.
void ReadinessBackend::on_listener_readable(HandleId handle) {
  for (int i = 0; i < kMaxAcceptsPerWake; ++i) {
    Socket* listener = sockets_.find(handle);
    if (listener->accepts.empty() && !listener->streaming_accept) break;
    int result = accept_one(listener->fd.get());
    if (result == kEAGAIN) break;
    listener = sockets_.find(handle);
    if (!listener->accepts.empty()) {
      outbox_.post({handle, EventKind::kCompleted, result, listener->take_accept(false)});
    } else {
      outbox_.post({handle, EventKind::kAccepted, result, 0});
      // Out of descriptors (EMFILE) and the like: stop, or level triggering would spin on the
      // pending connection. JavaScript decides when to try again.
      if (result < 0) listener->streaming_accept = false;
    }
    if (result < 0) break;
  }
  Socket* listener = sockets_.find(handle);
  if (has(listener->watched, Interest::kReadable)) outbox_.post({handle, EventKind::kReadable, 0, 0});
}

void ReadinessBackend::on_writable(HandleId handle, Socket& s, int32_t reported_error) {
  if (s.connect_op >= 0) {
    ++stats_.syscalls;
    int result = pending_socket_error(s.fd.get());
    if (result == 0) result = reported_error;
    outbox_.post({handle, EventKind::kCompleted, result, std::exchange(s.connect_op, -1)});
    return;
  }
  while (!s.writes.empty()) {
    int n = write_some(s, s.writes.front().rest);
    if (n == kEAGAIN) break;
    if (n < 0) {
      s.fail_writes(handle, n, outbox_);
      break;
    }
    s.account_sent(handle, 1, static_cast<size_t>(n), outbox_);
  }
  // While writes remain the socket is full (the loop above ended on EAGAIN): level triggering
  // reports it again once it has room, and the writable goes out when the queue is empty.
  if (has(s.watched, Interest::kWritable) && s.reactor_writable()) outbox_.post({handle, EventKind::kWritable, 0, 0});
}

}  // namespace twinloop
