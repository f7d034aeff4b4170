#include "readiness.h"

#include <algorithm>
#include <cerrno>
#include <utility>

#include "monotonic_clock.h"

namespace twinloop {

namespace {

constexpr int kMaxAcceptsPerWake = 64;  // so one busy listener cannot monopolise a drain

int32_t clamp_count(size_t bytes) { return static_cast<int32_t>(std::min<size_t>(bytes, INT32_MAX)); }

}  // namespace

int ReadinessBackend::listen(const SocketAddress& address, const ListenOptions& options) {
  UniqueFd fd;
  stats_.syscalls += 4;  // socket, setsockopt, bind, listen
  if (int rc = open_listener(address, options, fd); rc < 0) return rc;
  Socket socket;
  socket.fd = std::move(fd);
  socket.listener = true;
  return insert(std::move(socket));
}

int ReadinessBackend::connect(const SocketAddress& address, const SocketAddress* local, int32_t op_id) {
  UniqueFd fd;
  stats_.syscalls += local != nullptr ? 4 : 3;
  int rc = start_connect(address, local, fd);
  if (rc < 0 && rc != kEINPROGRESS) return rc;
  Socket socket;
  socket.fd = std::move(fd);
  HandleId handle = insert(std::move(socket));
  if (handle < 0) return handle;
  if (rc == 0) {
    defer({handle, EventKind::kCompleted, 0, op_id});
  } else {
    Socket* s = sockets_.find(handle);
    s->connect_op = op_id;
    update_interest(handle, *s, Interest::kNone);
  }
  return handle;
}

int ReadinessBackend::shutdown(HandleId handle) {
  Socket* s = sockets_.find(handle);
  if (!s) return kEBADF;
  ++stats_.syscalls;
  return ::shutdown(s->fd.get(), SHUT_WR) == 0 ? 0 : -errno;
}

int ReadinessBackend::close(HandleId handle, bool reset) {
  Socket* s = sockets_.find(handle);
  if (!s) return kEBADF;
  if (reset) set_reset_on_close(s->fd.get());
  if (s->connect_op >= 0) defer({handle, EventKind::kCompleted, kECANCELED, s->connect_op});
  for (const auto& read : s->reads) defer({handle, EventKind::kCompleted, kECANCELED, read.op_id});
  for (const auto& write : s->writes) defer({handle, EventKind::kCompleted, kECANCELED, write.op_id});
  for (int32_t op : s->accepts) defer({handle, EventKind::kCompleted, kECANCELED, op});
  before_close(*s);
  ++stats_.syscalls;
  sockets_.erase(handle);
  return 0;
}

int ReadinessBackend::address(HandleId handle, bool peer, SocketAddress& out) {
  Socket* s = sockets_.find(handle);
  if (!s) return kEBADF;
  return socket_address(s->fd.get(), peer, out);
}

int ReadinessBackend::set_socket_option(HandleId handle, SocketOption option, int value) {
  Socket* s = sockets_.find(handle);
  if (!s) return kEBADF;
  ++stats_.syscalls;
  return twinloop::set_socket_option(s->fd.get(), option, value);
}

int ReadinessBackend::socket_option(HandleId handle, SocketOption option) {
  Socket* s = sockets_.find(handle);
  if (!s) return kEBADF;
  return twinloop::socket_option(s->fd.get(), option);
}

int ReadinessBackend::watch(HandleId handle, Interest interest) {
  Socket* s = sockets_.find(handle);
  if (!s) return kEBADF;
  s->watched = interest;
  return update_interest(handle, *s, Interest::kNone);
}

int ReadinessBackend::try_read(HandleId handle, std::span<uint8_t> buffer) {
  Socket* s = sockets_.find(handle);
  if (!s) return kEBADF;
  if (s->streamed) return kEBUSY;
  return read_some(*s, buffer);
}

int ReadinessBackend::try_write(HandleId handle, std::span<const uint8_t> buffer) {
  Socket* s = sockets_.find(handle);
  if (!s) return kEBADF;
  return write_some(*s, buffer);
}

int ReadinessBackend::try_accept(HandleId handle) {
  Socket* s = sockets_.find(handle);
  if (!s) return kEBADF;
  if (!s->listener) return kEINVAL;
  return accept_one(s->fd.get());
}

int ReadinessBackend::submit_read(HandleId handle, std::span<uint8_t> buffer, int32_t op_id) {
  Socket* s = sockets_.find(handle);
  if (!s) return kEBADF;
  if (s->streamed) return kEBUSY;
  s->reads.push_back({buffer, op_id});
  return update_interest(handle, *s, Interest::kNone);
}

int ReadinessBackend::submit_write(HandleId handle, std::span<const uint8_t> buffer, int32_t op_id) {
  Socket* s = sockets_.find(handle);
  if (!s) return kEBADF;
  if (s->connect_op >= 0) return kENOTCONN;
  if (s->write_torn) return kEPIPE;
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
  s->writes.push_back({buffer, op_id, size - buffer.size()});
  int rc = update_interest(handle, *s, Interest::kNone);
  return rc < 0 ? rc : 0;
}

int ReadinessBackend::submit_accept(HandleId handle, int32_t op_id) {
  Socket* s = sockets_.find(handle);
  if (!s) return kEBADF;
  if (!s->listener) return kEINVAL;
  s->accepts.push_back(op_id);
  return update_interest(handle, *s, Interest::kNone);
}

int ReadinessBackend::set_streaming(HandleId handle, Stream stream, bool on) {
  bool Socket::*flag = stream == Stream::kRead ? &Socket::streaming_read : &Socket::streaming_accept;
  Socket* s = sockets_.find(handle);
  if (!s) return kEBADF;
  if ((flag == &Socket::streaming_accept) != s->listener) return kEINVAL;
  if (on && flag == &Socket::streaming_read) {
    if (!s->reads.empty()) return kEBUSY;  // the stream would take bytes the queued reads wait for
    s->streamed = true;
  }
  s->*flag = on;
  return update_interest(handle, *s, Interest::kNone);
}

// Timers and cancellation. A queued operation never reached the kernel, so cancelling it is taking
// it off the socket's queue; its -ECANCELED goes through the deferred queue like every completion
// made outside a drain.
int ReadinessBackend::cancel(HandleId handle, int32_t op_id) {
  if (handle == -1) {
    if (!timers_.cancel(op_id)) return kENOENT;
    // The OS timer stays armed: firing once for nothing costs less than re-arming it per cancel
    // (a timerfd_settime on epoll, a change on kqueue), and per-request timeouts are nearly always
    // cancelled.
    defer({-1, EventKind::kCompleted, kECANCELED, op_id});
    return 0;
  }
  Socket* s = sockets_.find(handle);
  if (!s) return kEBADF;
  if (s->connect_op == op_id) {
    s->connect_op = -1;
    defer({handle, EventKind::kCompleted, kECANCELED, op_id});
    return 0;
  }
  auto read = std::find_if(s->reads.begin(), s->reads.end(), [op_id](const PendingRead& r) { return r.op_id == op_id; });
  if (read != s->reads.end()) {
    s->reads.erase(read);
    defer({handle, EventKind::kCompleted, kECANCELED, op_id});
    return 0;
  }
  auto accept = std::find(s->accepts.begin(), s->accepts.end(), op_id);
  if (accept != s->accepts.end()) {
    s->accepts.erase(accept);
    defer({handle, EventKind::kCompleted, kECANCELED, op_id});
    return 0;
  }
  auto write = std::find_if(s->writes.begin(), s->writes.end(), [op_id](const PendingWrite& w) { return w.op_id == op_id; });
  if (write == s->writes.end()) return kENOENT;
  if (write->sent == 0) {
    s->writes.erase(write);
    defer({handle, EventKind::kCompleted, kECANCELED, op_id});
    return 0;
  }
  // Only the head of the queue can be half-sent: withdrawing the rest of it tears the byte
  // stream (see Backend::cancel), so nothing queued may follow it either.
  defer({handle, EventKind::kCompleted, clamp_count(write->sent), op_id});
  for (auto later = write + 1; later != s->writes.end(); ++later) defer({handle, EventKind::kCompleted, kECANCELED, later->op_id});
  s->writes.clear();
  s->write_torn = true;
  return 0;
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

void ReadinessBackend::on_timer(BatchSink& sink) {
  armed_deadline_ = 0;
  timers_.pop_expired(monotonic_now_ns(), [&](int32_t op_id) { emit(sink, {-1, EventKind::kCompleted, 0, op_id}); });
  arm_timer();
}

void ReadinessBackend::drain(BatchSink& sink) {
  in_drain_ = true;
  collect_files();
  deferred_.drain_into(sink);
  drain_ready(sink);
  in_drain_ = false;
  if (!deferred_.empty()) signal_wake();
}

void ReadinessBackend::collect_files() {
  finished_files_.clear();
  files_.collect(finished_files_);
  for (const Event& event : finished_files_) {
    ++stats_.events;
    deferred_.push(event);
  }
}

int ReadinessBackend::accept_one(int listen_fd) {
  ++stats_.syscalls;
  int fd = accept_connection(listen_fd);
  if (fd < 0) return fd;
  Socket socket;
  socket.fd.reset(fd);
  return insert(std::move(socket));
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
    on_listener_readable(handle, sink);
    return;
  }
  if (!s.reads.empty()) {
    PendingRead read = s.reads.front();
    int n = read_some(s, read.buffer);
    if (n != kEAGAIN) {
      s.reads.erase(s.reads.begin());
      emit(sink, {handle, EventKind::kCompleted, n, read.op_id});
    }
  } else if (s.streaming_read) {
    std::span<uint8_t> space = sink.arena_space(kMaxStreamRead);
    if (!space.empty()) {  // else the batch is full of data: the next wait reports it again
      int n = read_some(s, space);
      if (n != kEAGAIN) {
        int32_t offset = n > 0 ? sink.commit_arena(static_cast<size_t>(n)) : 0;
        // After EOF or an error the socket stays readable for ever: stop streaming it.
        if (n <= 0) s.streaming_read = false;
        emit(sink, {handle, EventKind::kData, n, offset});
      }
    }
  }
  if (has(s.watched, Interest::kReadable)) emit(sink, {handle, EventKind::kReadable, 0, 0});
}

// Accepting inserts into the handle table, which may move every Socket: the listener is looked up
// again after each accept instead of held by reference.
void ReadinessBackend::on_listener_readable(HandleId handle, BatchSink& sink) {
  for (int i = 0; i < kMaxAcceptsPerWake; ++i) {
    Socket* listener = sockets_.find(handle);
    if (listener->accepts.empty() && !listener->streaming_accept) break;
    int result = accept_one(listener->fd.get());
    if (result == kEAGAIN) break;
    listener = sockets_.find(handle);
    if (!listener->accepts.empty()) {
      emit(sink, {handle, EventKind::kCompleted, result, listener->accepts.front()});
      listener->accepts.erase(listener->accepts.begin());
    } else {
      emit(sink, {handle, EventKind::kAccepted, result, 0});
      // Out of descriptors (EMFILE) and the like: stop, or level triggering would spin on the
      // pending connection. JavaScript decides when to try again.
      if (result < 0) listener->streaming_accept = false;
    }
    if (result < 0) break;
  }
  Socket* listener = sockets_.find(handle);
  if (has(listener->watched, Interest::kReadable)) emit(sink, {handle, EventKind::kReadable, 0, 0});
}

void ReadinessBackend::on_writable(HandleId handle, Socket& s, BatchSink& sink, int32_t reported_error) {
  if (s.connect_op >= 0) {
    ++stats_.syscalls;
    int result = pending_socket_error(s.fd.get());
    if (result == 0) result = reported_error;
    emit(sink, {handle, EventKind::kCompleted, result, s.connect_op});
    s.connect_op = -1;
    return;
  }
  size_t done = 0;
  for (; done < s.writes.size(); ++done) {
    PendingWrite& write = s.writes[done];
    int n = 0;
    while (!write.buffer.empty()) {
      n = write_some(s, write.buffer);
      if (n < 0) break;
      write.buffer = write.buffer.subspan(static_cast<size_t>(n));
      write.sent += static_cast<size_t>(n);
    }
    if (n == kEAGAIN) break;
    emit(sink, {handle, EventKind::kCompleted, n < 0 ? n : 0, write.op_id});
  }
  s.writes.erase(s.writes.begin(), s.writes.begin() + static_cast<std::ptrdiff_t>(done));
  if (has(s.watched, Interest::kWritable)) emit(sink, {handle, EventKind::kWritable, 0, 0});
}

}  // namespace twinloop
