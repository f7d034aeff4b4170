// The proactor on Windows: overlapped I/O (AcceptEx, ConnectEx, WSARecv, WSASend) completing on
// one I/O completion port per loop.
//
// Node's loop cannot wait on a completion port, so a thread of ours does: it blocks in
// GetQueuedCompletionStatusEx, moves each batch of completions into a locked vector and wakes the
// JavaScript thread once (an atomic flag coalesces the wakes until drain() has run). drain() runs
// on the JavaScript thread, swaps that vector out and turns completions into events; everything
// else — the handle table, the sockets' queues — is touched by the JavaScript thread only.
//
// Operations never skip the port (no FILE_SKIP_COMPLETION_PORT_ON_SUCCESS): an operation that
// succeeds at once still completes through it, so there is one path for every result. Every
// OVERLAPPED lives in a pooled Operation owned by the backend, not by the socket, because the
// kernel writes to it until its completion is dequeued — also after the socket was closed.
//
// The reactor API is emulated the way libuv reads TCP on Windows:
//   readable — a zero-byte overlapped WSARecv completes when data (or EOF, or an error) is there
//              without taking any; for a listener, an AcceptEx completed and its connection waits.
//   writable — connected and no send in flight. A try_write that finds the send buffer full
//              takes the bytes anyway into a send of its own (bounded by kMaxStagedWrite) and the
//              socket is not writable until that completes: without a completion there would be
//              nothing to say when room came back.
// Level triggering as with epoll: after a readiness event the readiness is re-armed once
// JavaScript has run its callbacks (flush()), so a socket that is still readable, or still
// writable and watched, is reported again.
//
// Cancellation, timers and files (the rest of the Backend contract):
//   cancel     — a queued operation is taken off its queue; one the kernel holds gets CancelIoEx on
//                its own OVERLAPPED and completes when its packet comes back, never before.
//   timers     — iocp_timers.h: a TimerHeap on the JavaScript thread, whose earliest deadline is the
//                waiting thread's GetQueuedCompletionStatusEx timeout.
//   files      — iocp_files.h: overlapped ReadFile/WriteFile on the same port (completion key
//                CompletionKey::kFile), open/flush/close on the system thread pool.
//
// Unix domain sockets are not supported here (UV_EAFNOSUPPORT); Windows has AF_UNIX, but neither
// AcceptEx nor ConnectEx accepts it.
//
// The class and the map of the files that implement it: iocp_backend.h.
#include "iocp_backend.h"

#include "../core/byte_pool.h"

#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace twinloop::iocp {
namespace {

// A try_write that finds the send buffer full takes at most this much into its own send.
constexpr size_t kMaxStagedWrite = 64 * 1024;
// How long teardown waits for what is in flight to come back (DESIGN: bounded teardown).
constexpr ULONGLONG kTeardownBoundMs = 1000;

}  // namespace

IocpBackend::IocpBackend(std::unique_ptr<WinsockSession> winsock, UniqueHandle port, SocketExtensions extensions)
    : winsock_(std::move(winsock)), port_(std::move(port)), extensions_(extensions) {
  info_ = {"iocp", "proactor", {"overlapped-io", "GetQueuedCompletionStatusEx", "zero-byte-read-readiness", "waiter-thread"}};
  completed_.reserve(kMaxKernelEvents);
  ready_.reserve(kMaxKernelEvents);
}

IocpBackend::~IocpBackend() {
  wake_ = nullptr;  // the loop is going away: what closing defers is never delivered
  std::vector<HandleId> handles;
  sockets_.for_each([&](HandleId handle, Socket&) { handles.push_back(handle); });
  for (HandleId handle : handles) release_socket(handle, false);
  if (thread_.get() != nullptr) {
    PostQueuedCompletionStatus(port_.get(), 0, to_key(CompletionKey::kStop), nullptr);
    WaitForSingleObject(thread_.get(), INFINITE);
  }
  // Every operation must be back before its memory, or the buffers JavaScript lent it, may go:
  // closing the sockets cancelled them all, and cancel_all the file transfers, so this takes
  // milliseconds — but a work item on the thread pool (a CreateFileW or a FlushFileBuffers that
  // waits, on a pipe or a network path) cannot be interrupted, so the wait has a bound.
  for (const OVERLAPPED_ENTRY& entry : completed_) reclaim(entry);
  completed_.clear();
  files_.cancel_all();
  OVERLAPPED_ENTRY entries[kMaxKernelEvents];
  ULONGLONG deadline = GetTickCount64() + kTeardownBoundMs;
  while (operations_.in_flight() > 0 || files_.in_flight() > 0) {
    ULONGLONG now = GetTickCount64();
    if (now >= deadline) break;
    ULONG count = 0;
    if (!GetQueuedCompletionStatusEx(port_.get(), entries, kMaxKernelEvents, &count, static_cast<DWORD>(deadline - now), FALSE)) continue;
    for (ULONG i = 0; i < count; ++i) reclaim(entries[i]);
  }
  if (operations_.in_flight() == 0 && files_.in_flight() == 0) return;
  // Given up on. A work item still running posts nothing from now on (the port closes with this
  // backend) and disposes of its operation itself; what was posted before is dequeued here.
  files_.abandon_work();
  for (ULONG count = 0; GetQueuedCompletionStatusEx(port_.get(), entries, kMaxKernelEvents, &count, 0, FALSE);) {
    for (ULONG i = 0; i < count; ++i) reclaim(entries[i]);
  }
  // What is still out — a work item, an operation the kernel never gave back — is leaked on
  // purpose, its memory and the buffers the binding lent it: freeing them would let a pool thread
  // or the kernel write into reused memory.
  abandoned_operations += operations_.in_flight() + files_.in_flight();
}

void IocpBackend::set_wake(void (*wake)(void* context), void* context) {
  wake_context_ = context;
  wake_.store(wake);
  if (thread_.get() == nullptr) thread_ = UniqueHandle(CreateThread(nullptr, 64 * 1024, wait_loop, this, 0, nullptr));
}

int IocpBackend::listen(const SocketAddress& address, const ListenOptions& options) {
  // SO_REUSEPORT does not exist on Windows; SO_REUSEADDR would let a second socket take over a
  // port in use (why libuv never sets it), and TIME_WAIT does not block bind there anyway.
  if (options.reuse_port) return kENOTSUP;
  SockAddr addr;
  if (int rc = to_sockaddr(address, addr); rc < 0) return rc;
  UniqueSocket socket;
  if (int rc = open_socket(addr.storage.ss_family, socket); rc < 0) return rc;
  // Windows makes IPv6 sockets IPv6-only by default; Node's (and Linux's) default is dual-stack.
  if (addr.storage.ss_family == AF_INET6) enable(socket.get(), IPPROTO_IPV6, IPV6_V6ONLY, options.ipv6_only ? TRUE : FALSE);
  stats_.syscalls += 2;
  if (::bind(socket.get(), addr.get(), addr.length) != 0) return last_socket_error();
  if (::listen(socket.get(), options.backlog) != 0) return last_socket_error();
  Socket state;
  state.socket = std::move(socket);
  state.family = addr.storage.ss_family;
  state.listener = true;
  return insert(std::move(state));
}

int IocpBackend::connect(const SocketAddress& address, const SocketAddress* local, int32_t op_id) {
  SockAddr addr;
  if (int rc = to_sockaddr(address, addr); rc < 0) return rc;
  // ConnectEx insists on a bound socket: to `local`, or to any address of the family.
  SockAddr bound;
  if (local != nullptr) {
    if (int rc = to_sockaddr(*local, bound); rc < 0) return rc;
    if (bound.storage.ss_family != addr.storage.ss_family) return kEAFNOSUPPORT;
  } else {
    bound.storage.ss_family = addr.storage.ss_family;
    bound.length = addr.length;
  }
  UniqueSocket socket;
  if (int rc = open_socket(addr.storage.ss_family, socket); rc < 0) return rc;
  // IPv6-only by default on Windows, which makes an IPv4-mapped address (::ffff:a.b.c.d)
  // unreachable, to connect to or bind to (ENETUNREACH); libuv clears it before binding too.
  if (addr.storage.ss_family == AF_INET6) enable(socket.get(), IPPROTO_IPV6, IPV6_V6ONLY, FALSE);
  stats_.syscalls += 2;
  if (::bind(socket.get(), bound.get(), bound.length) != 0) return last_socket_error();
  enable(socket.get(), IPPROTO_TCP, TCP_NODELAY);  // Nagle plus delayed ACKs add 40 ms per reply
  Socket state;
  state.socket = std::move(socket);
  state.family = addr.storage.ss_family;
  HandleId handle = insert(std::move(state));
  if (handle < 0) return handle;
  Socket* s = sockets_.find(handle);
  Operation* op = acquire(OpKind::kConnect, handle, op_id);
  ++stats_.syscalls;
  if (!extensions_.connect_ex(s->socket.get(), addr.get(), addr.length, nullptr, 0, nullptr, &op->overlapped) &&
      WSAGetLastError() != ERROR_IO_PENDING) {
    int rc = last_socket_error();
    release(op);
    sockets_.erase(handle);
    return rc;
  }
  s->connect = op;
  s->connect_op = op_id;
  s->connect_held = true;
  return handle;
}

int IocpBackend::shutdown(HandleId handle) {
  Socket* s = sockets_.find(handle);
  if (!s) return kEBADF;
  ++stats_.syscalls;
  return ::shutdown(s->socket.get(), SD_SEND) == 0 ? 0 : last_socket_error();
}

int IocpBackend::close(HandleId handle, bool reset) {
  if (!sockets_.find(handle)) return kEBADF;
  release_socket(handle, reset);
  return 0;
}

int IocpBackend::address(HandleId handle, bool peer, SocketAddress& out) {
  Socket* s = sockets_.find(handle);
  if (!s) return kEBADF;
  return socket_address(s->socket.get(), peer, out);
}

int IocpBackend::set_socket_option(HandleId handle, SocketOption option, int value) {
  Socket* s = sockets_.find(handle);
  if (!s) return kEBADF;
  ++stats_.syscalls;
  return iocp::set_socket_option(s->socket.get(), option, value);
}

int IocpBackend::socket_option(HandleId handle, SocketOption option) {
  Socket* s = sockets_.find(handle);
  if (!s) return kEBADF;
  return iocp::socket_option(s->socket.get(), option);
}

int IocpBackend::watch(HandleId handle, Interest interest) {
  Socket* s = sockets_.find(handle);
  if (!s) return kEBADF;
  s->watched = interest;
  return update(handle, *s);
}

int IocpBackend::try_read(HandleId handle, std::span<uint8_t> buffer) {
  Socket* s = sockets_.find(handle);
  if (!s) return kEBADF;
  if (s->listener) return kENOTCONN;
  if (int rc = s->check_read(); rc < 0) return rc;
  if (s->read_error != 0) return std::exchange(s->read_error, 0);
  int n = recv_some(*s, buffer);
  if (n == kEAGAIN) s->readable = false;
  return n;
}

int IocpBackend::try_write(HandleId handle, std::span<const uint8_t> buffer) {
  Socket* s = sockets_.find(handle);
  if (!s) return kEBADF;
  if (s->write_error != 0) return std::exchange(s->write_error, 0);
  if (!s->connected) return s->listener ? kENOTCONN : kEAGAIN;
  if (s->send != nullptr) return kEAGAIN;  // the staged send of an earlier try_write
  if (int rc = s->check_try_write(); rc < 0) return rc;
  int n = send_some(*s, buffer);
  if (n != kEAGAIN || buffer.empty()) return n;
  // The send buffer is full: take a bounded copy into a send of our own, so that its completion
  // says when the socket is writable again.
  size_t length = std::min(buffer.size(), kMaxStagedWrite);
  Operation* op = acquire(OpKind::kSend, handle, -1);
  op->staging = std::make_unique<uint8_t[]>(length);
  std::memcpy(op->staging.get(), buffer.data(), length);
  op->rest = {op->staging.get(), length};
  if (int rc = post_send(*s, op, op->rest); rc < 0) {
    release(op);
    return rc;
  }
  return static_cast<int>(length);
}

int IocpBackend::try_accept(HandleId handle) {
  Socket* s = sockets_.find(handle);
  if (!s) return kEBADF;
  if (int rc = s->check_accept(); rc < 0) return rc;
  if (!s->backlog.empty()) return adopt_connection(take_backlog(*s));
  ++stats_.syscalls;
  SOCKET accepted = ::accept(s->socket.get(), nullptr, nullptr);
  if (accepted == INVALID_SOCKET) return last_socket_error();
  return adopt_connection(UniqueSocket(accepted));
}

int IocpBackend::submit_read(HandleId handle, std::span<uint8_t> buffer, int32_t op_id) {
  Socket* s = sockets_.find(handle);
  if (!s) return kEBADF;
  if (s->listener) return kENOTCONN;
  if (int rc = s->check_read(); rc < 0) return rc;
  s->reads.push_back({buffer, op_id});
  if (s->reads.size() > 1) return 0;  // behind the read the kernel holds
  int rc = post_recv(handle, *s, buffer, op_id);
  if (rc < 0) s->reads.pop_back();
  return rc;
}

int IocpBackend::submit_write(HandleId handle, std::span<const uint8_t> buffer, int32_t op_id, WriteKeep keep) {
  Socket* s = sockets_.find(handle);
  if (!s) return kEBADF;
  if (int rc = s->check_write(); rc < 0) return rc;
  if (!s->connected) return kENOTCONN;
  if (s->send != nullptr || !s->writes.empty()) {
    return s->queue_write(buffer, op_id, 0, keep);
  }
  // Speculative send, as on epoll: bytes the send buffer takes now need no completion at all.
  size_t size = buffer.size();
  while (!buffer.empty()) {
    int n = send_some(*s, buffer);
    if (n == kEAGAIN) break;
    if (n < 0) return n;
    buffer = buffer.subspan(static_cast<size_t>(n));
  }
  if (buffer.empty()) return 1;
  // What went out already counts if it is cancelled: the peer may have those bytes.
  if (int rc = s->queue_write(buffer, op_id, size - buffer.size(), keep); rc < 0) return rc;
  buffer = s->writes.back().rest;
  Operation* op = acquire(OpKind::kSend, handle, op_id);
  if (int rc = post_queued_send(*s, op); rc < 0) {
    release(op);
    s->unqueue_last_write();
    return rc;
  }
  return 0;
}

int IocpBackend::submit_accept(HandleId handle, int32_t op_id) {
  Socket* s = sockets_.find(handle);
  if (!s) return kEBADF;
  if (int rc = s->check_accept(); rc < 0) return rc;
  s->accepts.push_back({op_id});
  if (int rc = update(handle, *s); rc < 0) {
    s = sockets_.find(handle);
    s->accepts.pop_back();
    return rc;
  }
  return 0;
}

// What the kernel has not seen yet is taken off the socket's queue and completes with ECANCELED
// at once; what it holds gets CancelIoEx on its own OVERLAPPED and completes only when the kernel
// hands that back — ECANCELED (ERROR_OPERATION_ABORTED), or its real result if it finished first
// — so that no buffer is released while the kernel may still use it.
int IocpBackend::cancel(HandleId handle, int32_t op_id) {
  if (handle == -1) return cancel_timer(timers_, op_id, outbox_);
  Socket* s = sockets_.find(handle);
  if (!s) return kEBADF;
  switch (s->cancel(handle, op_id, outbox_)) {
    case CancelOutcome::kNotFound:
      return kENOENT;
    case CancelOutcome::kSettled:
      if (s->listener) withdraw_surplus_accepts(*s);  // an accept left: the AcceptEx calls it wanted may go
      return 0;
    case CancelOutcome::kRecallRead:
      recall(*s, s->recv);
      return 0;
    case CancelOutcome::kRecallWrite:
      recall(*s, s->send);
      return 0;
    case CancelOutcome::kRecallConnect:
      recall(*s, s->connect);
      return 0;
    case CancelOutcome::kRecallAccept:  // never: the AcceptEx calls belong to no accept (accepts_held is 0)
      return 0;
  }
  return 0;
}

Stats IocpBackend::stats() const {
  Stats stats = stats_;
  stats.syscalls += files_.syscalls();
  stats.events = outbox_.events();
  return stats;
}

int IocpBackend::open_socket(int family, UniqueSocket& out) {
  ++stats_.syscalls;
  UniqueSocket socket = open_tcp_socket(family);
  if (!socket) return last_socket_error();
  if (int rc = prepare(socket.get()); rc < 0) return rc;
  out = std::move(socket);
  return 0;
}

// Non-blocking for try_read/try_write/accept (overlapped calls are not affected by the mode, as
// libuv relies on too) and tied to the port.
int IocpBackend::prepare(SOCKET socket) {
  u_long on = 1;
  stats_.syscalls += 2;
  if (ioctlsocket(socket, FIONBIO, &on) != 0) return last_socket_error();
  if (CreateIoCompletionPort(reinterpret_cast<HANDLE>(socket), port_.get(), to_key(CompletionKey::kSocket), 0) == nullptr) {
    return translate_system_error(GetLastError());
  }
  return 0;
}

HandleId IocpBackend::insert(Socket socket) {
  HandleId handle = sockets_.insert(std::move(socket));
  return handle < 0 ? kEMFILE : handle;
}

// Inserting may move every Socket: callers look theirs up again afterwards.
int IocpBackend::adopt_connection(UniqueSocket socket) {
  if (int rc = prepare(socket.get()); rc < 0) return rc;
  enable(socket.get(), IPPROTO_TCP, TCP_NODELAY);
  Socket state;
  state.socket = std::move(socket);
  state.connected = true;
  return insert(std::move(state));
}

UniqueSocket IocpBackend::take_backlog(Socket& s) {
  UniqueSocket socket = std::move(s.backlog.front());
  s.backlog.erase(s.backlog.begin());
  return socket;
}

void IocpBackend::reclaim(const OVERLAPPED_ENTRY& entry) {
  if (entry.lpOverlapped == nullptr) return;
  if (key_of(entry) == CompletionKey::kFile) {
    files_.discard(entry.lpOverlapped);
  } else {
    release(reinterpret_cast<Operation*>(entry.lpOverlapped));
  }
}

// Closes the socket. Its operations in flight stay the kernel's until their completions arrive;
// then those JavaScript waits for complete with ECANCELED — only then may it drop the buffers.
void IocpBackend::release_socket(HandleId handle, bool reset) {
  Socket* s = sockets_.find(handle);
  for (Operation* op : {s->poll, s->recv, s->send, s->connect}) {
    if (op != nullptr) op->orphaned = true;
  }
  for (Operation* op : s->accepting) op->orphaned = true;
  s->withdraw_unheld(handle, outbox_);
  if (reset) {
    linger option{1, 0};  // an RST instead of a FIN, as a peer reset would
    setsockopt(s->socket.get(), SOL_SOCKET, SO_LINGER, reinterpret_cast<const char*>(&option), sizeof(option));
  }
  stats_.syscalls += 2;
  CancelIoEx(reinterpret_cast<HANDLE>(s->socket.get()), nullptr);
  sockets_.erase(handle);  // closesocket
}

namespace {

std::unique_ptr<Backend> make_iocp_backend(int& error, std::string& reason) {
  auto winsock = std::make_unique<WinsockSession>();
  if (!winsock->ok()) {
    error = kENOSYS;
    reason = "WSAStartup failed";
    return nullptr;
  }
  UniqueHandle port(CreateIoCompletionPort(INVALID_HANDLE_VALUE, nullptr, 0, 1));
  if (port.get() == nullptr) {
    error = translate_system_error(GetLastError());
    reason = "CreateIoCompletionPort failed";
    return nullptr;
  }
  SocketExtensions extensions;
  if (int rc = load_socket_extensions(extensions); rc < 0) {
    error = rc;
    reason = "cannot load AcceptEx/ConnectEx";
    return nullptr;
  }
  return std::make_unique<IocpBackend>(std::move(winsock), std::move(port), extensions);
}

const BackendRegistration kRegistration({"iocp", make_iocp_backend, 10});

}  // namespace
}  // namespace twinloop::iocp
