// The overlapped operations of sockets: taken from the pool, posted (zero-byte reads for
// readiness, receives, sends, AcceptEx), and kept in line with what JavaScript wants of each
// socket, which lists the socket for the next drain when it has something to report.
#include "iocp_backend.h"

#include "../core/byte_pool.h"

#include <algorithm>
#include <utility>
#include <vector>

namespace twinloop::iocp {
namespace {

// AcceptEx calls kept posted on a streaming listener: a burst of connections does not wait for a
// round trip through JavaScript per connection (libuv keeps 32; a handful serves a loop well).
constexpr size_t kStreamingAccepts = 4;
// At most this many for queued accepts. Each AcceptEx holds a socket of its own from the moment
// it is posted, so one per queued accept made 2 000 queued accepts hold 2 000 sockets (and, past
// the descriptor limit under wine, fail EMFILE for the whole process), where epoll's cost nothing
// until a connection comes. The connections these take wait in the backlog for the next accepts.
constexpr size_t kMaxQueuedAccepts = 32;

size_t live_accepts(const Socket& listener) {
  return static_cast<size_t>(std::count_if(listener.accepting.begin(), listener.accepting.end(), [](const Operation* op) { return !op->cancelled; }));
}

// The AcceptEx calls the listener should have posted (counting the connections in its backlog).
size_t wanted_accepts(const Socket& listener) {
  if (listener.streaming_accept) return kStreamingAccepts;
  return std::min(listener.accepts.size() + (has(listener.watched, Interest::kReadable) ? 1 : 0), kMaxQueuedAccepts);
}

}  // namespace

Operation* IocpBackend::acquire(OpKind kind, HandleId handle, int32_t op_id) {
  Operation* op = operations_.acquire();
  op->kind = kind;
  op->orphaned = false;
  op->handle = handle;
  op->op_id = op_id;
  op->cancelled = false;
  op->rest = {};
  return op;
}

void IocpBackend::release(Operation* op) {
  op->carried.clear();
  op->staging.reset();
  op->accepted.reset();
  operations_.release(op);
}

int IocpBackend::set_streaming(HandleId handle, Stream stream, bool on) {
  Socket* s = sockets_.find(handle);
  if (!s) return kEBADF;
  if (int rc = s->set_streaming(stream, on); rc < 0) return rc;
  return update(handle, *s);
}

// Brings the socket's operations in flight in line with what is wanted of it, and lists it for
// the next drain when it has something to report.
int IocpBackend::update(HandleId handle, Socket& s) {
  if (s.listener) return update_listener(handle);
  bool wants_readiness = s.streaming_read || has(s.watched, Interest::kReadable);
  if (wants_readiness && s.connected) {
    if (s.readable || s.read_error != 0) {
      need_attention(handle, s);
    } else if (s.poll == nullptr && s.recv == nullptr) {
      post_poll(handle, s);
    }
  }
  if (has(s.watched, Interest::kWritable) && (writable(s) || s.write_error != 0)) need_attention(handle, s);
  return 0;
}

int IocpBackend::update_listener(HandleId handle) {
  Socket* s = sockets_.find(handle);
  size_t wanted = wanted_accepts(*s);
  if (!s->backlog.empty() && (s->streaming_accept || !s->accepts.empty() || has(s->watched, Interest::kReadable))) {
    need_attention(handle, *s);
  }
  while (live_accepts(*s) + s->backlog.size() < wanted) {
    if (int rc = post_accept(handle, *s); rc < 0) {
      // Out of sockets (EMFILE, ENOBUFS): streaming stops and says so, as epoll's accept does;
      // JavaScript decides when to try again.
      if (s->streaming_accept) {
        s->streaming_accept = false;
        outbox_.post({handle, EventKind::kAccepted, rc, 0});
        return 0;
      }
      return rc;
    }
  }
  return 0;
}

// An AcceptEx posted for an accept that was cancelled since is asked back; its pre-created
// socket closes when it is. One that wins the race leaves its connection in the backlog for
// the next accept: no connection is dropped.
void IocpBackend::withdraw_surplus_accepts(Socket& listener) {
  if (listener.streaming_accept) return;
  size_t wanted = wanted_accepts(listener);
  size_t live = live_accepts(listener);
  for (auto op = listener.accepting.rbegin(); op != listener.accepting.rend() && live + listener.backlog.size() > wanted; ++op) {
    if ((*op)->cancelled) continue;
    recall(listener, *op);
    --live;
  }
}

// Asks the kernel to give back an operation it holds, once: its completion settles it.
void IocpBackend::recall(const Socket& s, Operation* op) {
  if (op->cancelled) return;
  op->cancelled = true;
  ++stats_.syscalls;
  // ERROR_NOT_FOUND: the operation is already over and its packet on the way.
  CancelIoEx(reinterpret_cast<HANDLE>(s.socket.get()), &op->overlapped);
}

void IocpBackend::need_attention(HandleId handle, Socket& s) {
  if (!s.in_attention) {
    s.in_attention = true;
    attention_.push_back(handle);
  }
  if (outbox_.sink() == nullptr) request_wake();
}

void IocpBackend::schedule_rearm(HandleId handle, Socket& s) {
  if (!s.in_rearm) {
    s.in_rearm = true;
    rearm_.push_back(handle);
  }
}

void IocpBackend::rearm() {
  if (rearm_.empty()) return;
  rearming_.swap(rearm_);
  for (HandleId handle : rearming_) {
    Socket* s = sockets_.find(handle);
    if (s == nullptr) continue;
    s->in_rearm = false;
    update(handle, *s);
  }
  rearming_.clear();
}

void IocpBackend::post_poll(HandleId handle, Socket& s) {
  Operation* op = acquire(OpKind::kPoll, handle, -1);
  WSABUF buf{0, nullptr};
  DWORD flags = 0;
  ++stats_.syscalls;
  if (WSARecv(s.socket.get(), &buf, 1, nullptr, &flags, &op->overlapped, nullptr) != 0 && WSAGetLastError() != WSA_IO_PENDING) {
    s.read_error = last_socket_error();
    release(op);
    need_attention(handle, s);
    return;
  }
  s.poll = op;
}

int IocpBackend::post_recv(HandleId handle, Socket& s, std::span<uint8_t> buffer, int32_t op_id) {
  Operation* op = acquire(OpKind::kRecv, handle, op_id);
  WSABUF buf{static_cast<ULONG>(std::min(buffer.size(), kMaxTransfer)), reinterpret_cast<char*>(buffer.data())};
  DWORD flags = 0;
  ++stats_.syscalls;
  if (WSARecv(s.socket.get(), &buf, 1, nullptr, &flags, &op->overlapped, nullptr) != 0 && WSAGetLastError() != WSA_IO_PENDING) {
    int rc = last_socket_error();
    release(op);
    return rc;
  }
  s.recv = op;
  s.reads_held = 1;
  return 0;
}

// Hands the head read to the kernel once it holds none; one that cannot be posted fails. While
// `more_waiting` (the last read filled its buffer) the next reads first try a non-blocking recv:
// one WSARecv, completion and wake per queued read made 10 000 one-byte reads of bytes already
// there take 2.9 s under wine (epoll: 113 ms).
void IocpBackend::post_reads(HandleId handle, Socket& s, bool more_waiting) {
  while (s.reads_held == 0 && !s.reads.empty()) {
    const QueuedRead& head = s.reads.front();
    if (more_waiting) {
      int n = recv_some(s, head.buffer);
      if (n != kEAGAIN) {
        more_waiting = n > 0 && static_cast<size_t>(n) == std::min(head.buffer.size(), kMaxTransfer);
        s.complete_read(handle, n, outbox_);
        continue;
      }
    }
    if (int rc = post_recv(handle, s, head.buffer, head.op_id); rc < 0) s.complete_read(handle, rc, outbox_);
  }
}

// A try_write's staged bytes (op_id -1: no queued write is held).
int IocpBackend::post_send(Socket& s, Operation* op, std::span<const uint8_t> bytes) {
  WSABUF buf{static_cast<ULONG>(std::min(bytes.size(), kMaxTransfer)), const_cast<char*>(reinterpret_cast<const char*>(bytes.data()))};
  ++stats_.syscalls;
  if (WSASend(s.socket.get(), &buf, 1, nullptr, 0, &op->overlapped, nullptr) != 0 && WSAGetLastError() != WSA_IO_PENDING) {
    return last_socket_error();
  }
  s.send = op;
  s.writes_held = 0;
  return 0;
}

// What is left of the first queued writes, up to kMaxGatheredWrites and kMaxTransfer, in one
// WSASend. Winsock captures the WSABUF array before the call returns (WSASend, "overlapped socket
// I/O"), so it lives on the stack; the bytes stay the writes' until the completion.
int IocpBackend::post_queued_send(Socket& s, Operation* op) {
  WSABUF buffers[kMaxGatheredWrites];
  DWORD count = 0;
  size_t total = 0;
  op->carried.clear();
  for (const QueuedWrite& write : s.writes) {
    if (count == kMaxGatheredWrites || total == kMaxTransfer) break;
    size_t length = std::min(write.rest.size(), kMaxTransfer - total);
    buffers[count++] = {static_cast<ULONG>(length), const_cast<char*>(reinterpret_cast<const char*>(write.rest.data()))};
    op->carried.push_back(write.op_id);
    total += length;
  }
  ++stats_.syscalls;
  if (WSASend(s.socket.get(), buffers, count, nullptr, 0, &op->overlapped, nullptr) != 0 && WSAGetLastError() != WSA_IO_PENDING) {
    return last_socket_error();
  }
  s.send = op;
  s.writes_held = static_cast<uint8_t>(count);
  return 0;
}

// Hands the first queued writes to the kernel once no send is in flight; if that cannot be
// posted, the head write fails.
void IocpBackend::post_writes(HandleId handle, Socket& s) {
  while (s.send == nullptr && !s.writes.empty()) {
    Operation* op = acquire(OpKind::kSend, handle, s.writes.front().op_id);
    if (int rc = post_queued_send(s, op); rc < 0) {
      release(op);
      s.fail_head_write(handle, rc, outbox_);
    }
  }
}

int IocpBackend::post_accept(HandleId handle, Socket& listener) {
  ++stats_.syscalls;
  UniqueSocket accepted = open_tcp_socket(listener.family);
  if (!accepted) return last_socket_error();
  Operation* op = acquire(OpKind::kAccept, handle, -1);
  op->accepted = std::move(accepted);
  DWORD received = 0;
  ++stats_.syscalls;
  if (!extensions_.accept_ex(listener.socket.get(), op->accepted.get(), op->addresses, 0, kAcceptAddressLength, kAcceptAddressLength,
                  &received, &op->overlapped) &&
      WSAGetLastError() != ERROR_IO_PENDING) {
    int rc = last_socket_error();
    release(op);
    return rc;
  }
  listener.accepting.push_back(op);
  return 0;
}

int IocpBackend::recv_some(Socket& s, std::span<uint8_t> buffer) {
  ++stats_.syscalls;
  int n = ::recv(s.socket.get(), reinterpret_cast<char*>(buffer.data()), static_cast<int>(std::min(buffer.size(), kMaxTransfer)), 0);
  return n >= 0 ? n : last_socket_error();
}

int IocpBackend::send_some(Socket& s, std::span<const uint8_t> buffer) {
  ++stats_.syscalls;
  int n = ::send(s.socket.get(), reinterpret_cast<const char*>(buffer.data()), static_cast<int>(std::min(buffer.size(), kMaxTransfer)), 0);
  return n >= 0 ? n : last_socket_error();
}

}  // namespace twinloop::iocp
