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
//                kFileKey), open/flush/close on the system thread pool.
//
// Unix domain sockets are not supported here (UV_EAFNOSUPPORT); Windows has AF_UNIX, but neither
// AcceptEx nor ConnectEx accepts it.
#include <winsock2.h>
#include <mswsock.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <utility>
#include <vector>

#include "../core/event_queue.h"
#include "../core/handle_table.h"
#include "iocp_files.h"
#include "iocp_socket.h"
#include "iocp_timers.h"

namespace twinloop {
namespace {

using namespace uv_errors;
using namespace iocp;

constexpr size_t kMaxStreamRead = 64 * 1024;
// A try_write that finds the send buffer full takes at most this much into its own send.
constexpr size_t kMaxStagedWrite = 64 * 1024;
// Results travel as int32: one call moves at most 1 GiB, and the caller continues with the rest.
constexpr size_t kMaxTransfer = size_t{1} << 30;
// AcceptEx calls kept posted on a streaming listener: a burst of connections does not wait for a
// round trip through JavaScript per connection (libuv keeps 32; a handful serves a loop well).
constexpr size_t kStreamingAccepts = 4;
constexpr ULONG kMaxCompletions = 256;
// Completion keys: 0 for socket operations, IocpFiles::kFileKey for file ones, and two packets
// without an OVERLAPPED: stop the waiting thread, or make it recompute its timeout (IocpTimers).
constexpr ULONG_PTR kStopKey = 1;
constexpr ULONG_PTR kTimerWakeKey = 2;
static_assert(IocpFiles::kFileKey != 0 && IocpFiles::kFileKey != kStopKey && IocpFiles::kFileKey != kTimerWakeKey);
// AcceptEx wants room for each address plus 16 bytes.
constexpr DWORD kAcceptAddressLength = sizeof(sockaddr_storage) + 16;

constexpr uint32_t kWantReadable = static_cast<uint32_t>(Interest::kReadable);
constexpr uint32_t kWantWritable = static_cast<uint32_t>(Interest::kWritable);

enum class OpKind : uint8_t { kPoll, kRecv, kSend, kAccept, kConnect };

// 376 bytes (x64), most of it AcceptEx's address area; pooled, so a busy loop allocates none.
struct Operation {
  OVERLAPPED overlapped;  // first: a completion's OVERLAPPED* is the Operation*
  OpKind kind = OpKind::kPoll;
  bool orphaned = false;  // its socket was closed: the completion only returns it to the pool
  bool cancelled = false;  // cancel() asked the kernel to give it back (CancelIoEx)
  HandleId handle = -1;
  int32_t op_id = -1;     // >= 0: a proactor operation JavaScript waits for
  std::span<const uint8_t> rest;          // kSend: bytes not sent yet
  size_t sent = 0;                        // kSend: bytes the peer has (> 0: cancelling tears the stream)
  std::unique_ptr<uint8_t[]> staging;     // kSend for try_write: our copy of the caller's bytes
  UniqueSocket accepted;                  // kAccept: the socket AcceptEx connects
  char addresses[2 * kAcceptAddressLength];
};
static_assert(offsetof(Operation, overlapped) == 0, "completions are mapped back by address");

struct PendingRead {
  std::span<uint8_t> buffer;
  int32_t op_id;
};

struct PendingWrite {
  std::span<const uint8_t> buffer;
  int32_t op_id;
};

// Per-socket state: 184 bytes (x64, measured) plus queues that allocate only once an operation
// has to wait. No per-connection read buffer: readiness comes from zero-byte reads, so an idle
// connection pins no memory in the kernel either.
struct Socket {
  UniqueSocket socket;
  int family = AF_INET;
  bool listener = false;
  bool connected = false;       // accepted sockets at once, clients once ConnectEx completed
  bool readable = false;        // a zero-byte read completed and nobody has found the socket empty since
  bool in_attention = false;    // listed in IocpBackend::attention_
  bool in_rearm = false;        // listed in IocpBackend::rearm_
  bool streaming_read = false;  // read_start
  bool streaming_accept = false;
  bool write_torn = false;      // a write was cancelled half-sent: no later byte may follow it
  uint32_t watched = 0;         // reactor interest (Interest bits)
  // An error a zero-byte read or a background send found: reported by the next read or write,
  // because the socket may not report it a second time.
  int read_error = 0;
  int write_error = 0;
  Operation* poll = nullptr;     // zero-byte WSARecv in flight
  Operation* recv = nullptr;     // proactor WSARecv in flight
  Operation* send = nullptr;     // WSASend in flight
  Operation* connect = nullptr;  // ConnectEx in flight
  std::vector<PendingRead> reads;    // proactor reads queued behind `recv`
  std::vector<PendingWrite> writes;  // proactor writes queued behind `send`
  std::vector<int32_t> accepts;      // listener: proactor accepts waiting for a connection
  std::vector<Operation*> accepting;  // listener: AcceptEx in flight
  std::vector<UniqueSocket> backlog;  // listener: accepted connections nobody has taken yet
};

class IocpBackend final : public Backend {
 public:
  IocpBackend(std::unique_ptr<WinsockSession> winsock, UniqueHandle port, LPFN_ACCEPTEX accept_ex, LPFN_CONNECTEX connect_ex)
      : winsock_(std::move(winsock)), port_(std::move(port)), accept_ex_(accept_ex), connect_ex_(connect_ex) {
    info_ = {"iocp", "proactor", {"overlapped-io", "GetQueuedCompletionStatusEx", "zero-byte-read-readiness", "waiter-thread"}};
    completed_.reserve(kMaxCompletions);
    ready_.reserve(kMaxCompletions);
  }

  ~IocpBackend() override {
    wake_ = nullptr;  // the loop is going away: what closing defers is never delivered
    std::vector<HandleId> handles;
    sockets_.for_each([&](HandleId handle, Socket&) { handles.push_back(handle); });
    for (HandleId handle : handles) release_socket(handle, false);
    if (thread_.get() != nullptr) {
      PostQueuedCompletionStatus(port_.get(), 0, kStopKey, nullptr);
      WaitForSingleObject(thread_.get(), INFINITE);
    }
    // Every operation must be back before its memory, or the buffers JavaScript lent it, may go:
    // closing the sockets cancelled them all, so this takes milliseconds.
    for (const OVERLAPPED_ENTRY& entry : completed_) reclaim(entry);
    completed_.clear();
    files_.cancel_all();
    OVERLAPPED_ENTRY entries[kMaxCompletions];
    // A flush or an open on the thread pool always ends, and posts to this port when it does: it is
    // waited for however long it takes.
    for (int round = 0; (operations_.in_flight() > 0 || files_.in_flight() > 0) && (round < 100 || files_.working() > 0); ++round) {
      ULONG count = 0;
      if (!GetQueuedCompletionStatusEx(port_.get(), entries, kMaxCompletions, &count, 100, FALSE)) continue;
      for (ULONG i = 0; i < count; ++i) reclaim(entries[i]);
    }
    // An operation the kernel never gave back is leaked on purpose: freeing it would let the
    // kernel write into reused memory.
  }

  const BackendInfo& info() const override { return info_; }
  int poll_fd() const override { return -1; }

  void set_wake(void (*wake)(void* context), void* context) override {
    wake_context_ = context;
    wake_.store(wake);
    if (thread_.get() == nullptr) thread_ = UniqueHandle(CreateThread(nullptr, 64 * 1024, wait_loop, this, 0, nullptr));
  }

  int listen(const SocketAddress& address, const ListenOptions& options) override {
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

  int connect(const SocketAddress& address, int32_t op_id) override {
    SockAddr addr;
    if (int rc = to_sockaddr(address, addr); rc < 0) return rc;
    UniqueSocket socket;
    if (int rc = open_socket(addr.storage.ss_family, socket); rc < 0) return rc;
    // ConnectEx insists on a bound socket.
    SockAddr any;
    any.storage.ss_family = addr.storage.ss_family;
    any.length = addr.length;
    stats_.syscalls += 2;
    if (::bind(socket.get(), any.get(), any.length) != 0) return last_socket_error();
    enable(socket.get(), IPPROTO_TCP, TCP_NODELAY);  // Nagle plus delayed ACKs add 40 ms per reply
    Socket state;
    state.socket = std::move(socket);
    state.family = addr.storage.ss_family;
    HandleId handle = insert(std::move(state));
    if (handle < 0) return handle;
    Socket* s = sockets_.find(handle);
    Operation* op = acquire(OpKind::kConnect, handle, op_id);
    ++stats_.syscalls;
    if (!connect_ex_(s->socket.get(), addr.get(), addr.length, nullptr, 0, nullptr, &op->overlapped) &&
        WSAGetLastError() != ERROR_IO_PENDING) {
      int rc = last_socket_error();
      release(op);
      sockets_.erase(handle);
      return rc;
    }
    s->connect = op;
    return handle;
  }

  int shutdown(HandleId handle) override {
    Socket* s = sockets_.find(handle);
    if (!s) return kEBADF;
    ++stats_.syscalls;
    return ::shutdown(s->socket.get(), SD_SEND) == 0 ? 0 : last_socket_error();
  }

  int close(HandleId handle, bool reset) override {
    if (!sockets_.find(handle)) return kEBADF;
    release_socket(handle, reset);
    return 0;
  }

  int address(HandleId handle, bool peer, SocketAddress& out) override {
    Socket* s = sockets_.find(handle);
    if (!s) return kEBADF;
    sockaddr_storage storage{};
    int length = sizeof(storage);
    auto* raw = reinterpret_cast<sockaddr*>(&storage);
    int rc = peer ? getpeername(s->socket.get(), raw, &length) : getsockname(s->socket.get(), raw, &length);
    if (rc != 0) return last_socket_error();
    char text[INET6_ADDRSTRLEN] = {};
    if (storage.ss_family == AF_INET) {
      auto* in = reinterpret_cast<sockaddr_in*>(raw);
      inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text));
      out = {SocketAddress::Family::kIPv4, text, ntohs(in->sin_port)};
      return out.port;
    }
    if (storage.ss_family == AF_INET6) {
      auto* in6 = reinterpret_cast<sockaddr_in6*>(raw);
      inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof(text));
      out = {SocketAddress::Family::kIPv6, text, ntohs(in6->sin6_port)};
      return out.port;
    }
    return kEAFNOSUPPORT;
  }

  int watch(HandleId handle, uint32_t interest) override {
    Socket* s = sockets_.find(handle);
    if (!s) return kEBADF;
    s->watched = interest;
    return update(handle, *s);
  }

  int try_read(HandleId handle, std::span<uint8_t> buffer) override {
    Socket* s = sockets_.find(handle);
    if (!s) return kEBADF;
    if (s->listener) return kENOTCONN;
    if (s->read_error != 0) return std::exchange(s->read_error, 0);
    int n = recv_some(*s, buffer);
    if (n == kEAGAIN) s->readable = false;
    return n;
  }

  int try_write(HandleId handle, std::span<const uint8_t> buffer) override {
    Socket* s = sockets_.find(handle);
    if (!s) return kEBADF;
    if (s->write_error != 0) return std::exchange(s->write_error, 0);
    if (!s->connected) return s->listener ? kENOTCONN : kEAGAIN;
    if (s->send != nullptr || !s->writes.empty()) return kEAGAIN;
    int n = send_some(*s, buffer);
    if (n != kEAGAIN || buffer.empty()) return n;
    // The send buffer is full: take a bounded copy into a send of our own, so that its completion
    // says when the socket is writable again.
    size_t length = std::min(buffer.size(), kMaxStagedWrite);
    Operation* op = acquire(OpKind::kSend, handle, -1);
    op->staging = std::make_unique<uint8_t[]>(length);
    std::memcpy(op->staging.get(), buffer.data(), length);
    op->rest = {op->staging.get(), length};
    if (int rc = post_send(*s, op); rc < 0) {
      release(op);
      return rc;
    }
    return static_cast<int>(length);
  }

  int try_accept(HandleId handle) override {
    Socket* s = sockets_.find(handle);
    if (!s) return kEBADF;
    if (!s->listener) return kEINVAL;
    if (!s->backlog.empty()) return adopt_connection(take_backlog(*s));
    ++stats_.syscalls;
    SOCKET accepted = ::accept(s->socket.get(), nullptr, nullptr);
    if (accepted == INVALID_SOCKET) return last_socket_error();
    return adopt_connection(UniqueSocket(accepted));
  }

  int submit_read(HandleId handle, std::span<uint8_t> buffer, int32_t op_id) override {
    Socket* s = sockets_.find(handle);
    if (!s) return kEBADF;
    if (s->listener) return kENOTCONN;
    if (s->streaming_read) return kEBUSY;
    if (s->recv != nullptr || !s->reads.empty()) {
      s->reads.push_back({buffer, op_id});
      return 0;
    }
    return post_recv(handle, *s, buffer, op_id);
  }

  int submit_write(HandleId handle, std::span<const uint8_t> buffer, int32_t op_id) override {
    Socket* s = sockets_.find(handle);
    if (!s) return kEBADF;
    if (s->write_torn) return kEPIPE;
    if (!s->connected) return kENOTCONN;
    if (s->send != nullptr || !s->writes.empty()) {
      s->writes.push_back({buffer, op_id});
      return 0;
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
    Operation* op = acquire(OpKind::kSend, handle, op_id);
    op->sent = size - buffer.size();  // the peer may already have these: a cancel must count them
    op->rest = buffer;
    if (int rc = post_send(*s, op); rc < 0) {
      release(op);
      return rc;
    }
    return 0;
  }

  int submit_accept(HandleId handle, int32_t op_id) override {
    Socket* s = sockets_.find(handle);
    if (!s) return kEBADF;
    if (!s->listener) return kEINVAL;
    s->accepts.push_back(op_id);
    if (int rc = update(handle, *s); rc < 0) {
      s = sockets_.find(handle);
      s->accepts.pop_back();
      return rc;
    }
    return 0;
  }

  int read_start(HandleId handle) override { return set_streaming(handle, &Socket::streaming_read, true); }
  int read_stop(HandleId handle) override { return set_streaming(handle, &Socket::streaming_read, false); }
  int accept_start(HandleId handle) override { return set_streaming(handle, &Socket::streaming_accept, true); }
  int accept_stop(HandleId handle) override { return set_streaming(handle, &Socket::streaming_accept, false); }

  // What the kernel has not seen yet is taken off the socket's queue and completes with ECANCELED
  // at once (deferred); what it holds gets CancelIoEx on its own OVERLAPPED and completes only
  // when the kernel hands that back — ECANCELED (ERROR_OPERATION_ABORTED), or its real result if
  // it finished first — so that no buffer is released while the kernel may still use it.
  int cancel(HandleId handle, int32_t op_id) override {
    if (handle == -1) {
      if (!timers_.cancel(op_id)) return kENOENT;
      defer({-1, EventKind::kCompleted, kECANCELED, op_id});
      return 0;
    }
    Socket* s = sockets_.find(handle);
    if (!s) return kEBADF;
    for (Operation* op : {s->recv, s->send, s->connect}) {
      if (op == nullptr || op->op_id != op_id) continue;
      if (!op->cancelled) {
        op->cancelled = true;
        ++stats_.syscalls;
        // ERROR_NOT_FOUND: the operation is already over and its packet on the way.
        CancelIoEx(reinterpret_cast<HANDLE>(s->socket.get()), &op->overlapped);
      }
      return 0;
    }
    auto read = std::find_if(s->reads.begin(), s->reads.end(), [op_id](const PendingRead& r) { return r.op_id == op_id; });
    if (read != s->reads.end()) {
      s->reads.erase(read);
      defer({handle, EventKind::kCompleted, kECANCELED, op_id});
      return 0;
    }
    // Only the write in flight can be half-sent; a queued one is withdrawn whole.
    auto write = std::find_if(s->writes.begin(), s->writes.end(), [op_id](const PendingWrite& w) { return w.op_id == op_id; });
    if (write != s->writes.end()) {
      s->writes.erase(write);
      defer({handle, EventKind::kCompleted, kECANCELED, op_id});
      return 0;
    }
    auto accept = std::find(s->accepts.begin(), s->accepts.end(), op_id);
    if (accept != s->accepts.end()) {
      s->accepts.erase(accept);
      defer({handle, EventKind::kCompleted, kECANCELED, op_id});
      withdraw_surplus_accepts(*s);
      return 0;
    }
    return kENOENT;
  }

  int start_timer(uint64_t delay_ms, int32_t op_id) override { return timers_.start(delay_ms, op_id) ? 0 : kEEXIST; }

  int file_open(const std::string& path, const FileOpenOptions& options, int32_t op_id) override {
    return files_.open(path, options, op_id);
  }
  int file_read(HandleId file, std::span<uint8_t> buffer, int64_t position, int32_t op_id) override {
    return files_.read(file, buffer, position, op_id);
  }
  int file_write(HandleId file, std::span<const uint8_t> buffer, int64_t position, int32_t op_id) override {
    return files_.write(file, buffer, position, op_id);
  }
  int file_sync(HandleId file, bool /*data_only*/, int32_t op_id) override { return files_.sync(file, op_id); }
  int file_close(HandleId file, int32_t op_id) override { return files_.close(file, op_id); }

  void drain(BatchSink& sink) override {
    // Cleared before the completions are taken: one that arrives after the swap wakes us again.
    wake_pending_.store(false);
    in_drain_ = true;
    sink_ = &sink;
    rearm();
    deferred_.drain_into(sink);
    {
      LockGuard guard(lock_);
      std::swap(ready_, completed_);
    }
    for (const OVERLAPPED_ENTRY& entry : ready_) complete(entry);
    ready_.clear();
    timers_.pop_expired([&](int32_t op_id) { emit({-1, EventKind::kCompleted, 0, op_id}); });
    // Sockets served now that still have something to report go to the back of the list, for the
    // next drain: one busy socket cannot fill every batch.
    serving_.swap(attention_);
    for (HandleId handle : serving_) {
      if (Socket* s = sockets_.find(handle); s != nullptr) s->in_attention = false;
    }
    for (HandleId handle : serving_) serve(handle);
    serving_.clear();
    sink_ = nullptr;
    in_drain_ = false;
    if (!deferred_.empty() || !attention_.empty()) request_wake();
  }

  // Called after JavaScript has handled a batch: readiness it reported is checked again now, so a
  // socket that is still ready is reported again (level triggering).
  void flush() override {
    rearm();
    if (!attention_.empty()) request_wake();
  }

  Stats stats() const override {
    Stats stats = stats_;
    stats.syscalls += files_.syscalls();
    return stats;
  }

 private:
  static DWORD WINAPI wait_loop(void* self) {
    static_cast<IocpBackend*>(self)->wait_for_completions();
    return 0;
  }

  void wait_for_completions() {
    OVERLAPPED_ENTRY entries[kMaxCompletions];
    for (;;) {
      bool due = false;
      DWORD timeout = timers_.next_timeout(due);
      if (due) request_wake();
      ULONG count = 0;
      if (!GetQueuedCompletionStatusEx(port_.get(), entries, kMaxCompletions, &count, timeout, FALSE)) {
        if (GetLastError() == ERROR_ABANDONED_WAIT_0) return;  // the port was closed
        continue;  // WAIT_TIMEOUT: next_timeout() says whether a timer is due, or how long is left
      }
      bool stop = false;
      bool any = false;
      {
        LockGuard guard(lock_);
        for (ULONG i = 0; i < count; ++i) {
          if (entries[i].lpOverlapped == nullptr) {  // a stop or a timer wake packet
            stop = stop || entries[i].lpCompletionKey == kStopKey;
            continue;
          }
          completed_.push_back(entries[i]);
          any = true;
        }
      }
      if (any) request_wake();
      if (stop) return;
    }
  }

  // Either thread. One wake per batch: the flag stays set until drain() has taken the batch.
  void request_wake() {
    void (*wake)(void*) = wake_.load();
    if (wake != nullptr && !wake_pending_.exchange(true)) wake(wake_context_);
  }

  int open_socket(int family, UniqueSocket& out) {
    ++stats_.syscalls;
    SOCKET raw = WSASocketW(family, SOCK_STREAM, IPPROTO_TCP, nullptr, 0, WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
    if (raw == INVALID_SOCKET) return last_socket_error();
    UniqueSocket socket(raw);
    if (int rc = prepare(socket.get()); rc < 0) return rc;
    out = std::move(socket);
    return 0;
  }

  // Non-blocking for try_read/try_write/accept (overlapped calls are not affected by the mode, as
  // libuv relies on too) and tied to the port.
  int prepare(SOCKET socket) {
    u_long on = 1;
    stats_.syscalls += 2;
    if (ioctlsocket(socket, FIONBIO, &on) != 0) return last_socket_error();
    if (CreateIoCompletionPort(reinterpret_cast<HANDLE>(socket), port_.get(), 0, 0) == nullptr) {
      return translate_system_error(GetLastError());
    }
    return 0;
  }

  HandleId insert(Socket socket) {
    HandleId handle = sockets_.insert(std::move(socket));
    return handle < 0 ? kEMFILE : handle;
  }

  // Inserting may move every Socket: callers look theirs up again afterwards.
  int adopt_connection(UniqueSocket socket) {
    if (int rc = prepare(socket.get()); rc < 0) return rc;
    enable(socket.get(), IPPROTO_TCP, TCP_NODELAY);
    Socket state;
    state.socket = std::move(socket);
    state.connected = true;
    return insert(std::move(state));
  }

  static UniqueSocket take_backlog(Socket& s) {
    UniqueSocket socket = std::move(s.backlog.front());
    s.backlog.erase(s.backlog.begin());
    return socket;
  }

  Operation* acquire(OpKind kind, HandleId handle, int32_t op_id) {
    Operation* op = operations_.acquire();
    op->kind = kind;
    op->orphaned = false;
    op->handle = handle;
    op->op_id = op_id;
    op->cancelled = false;
    op->rest = {};
    op->sent = 0;
    return op;
  }

  void release(Operation* op) {
    op->staging.reset();
    op->accepted.reset();
    operations_.release(op);
  }

  void reclaim(const OVERLAPPED_ENTRY& entry) {
    if (entry.lpOverlapped == nullptr) return;
    if (entry.lpCompletionKey == IocpFiles::kFileKey) {
      files_.discard(entry.lpOverlapped);
    } else {
      release(reinterpret_cast<Operation*>(entry.lpOverlapped));
    }
  }

  // Closes the socket. Its operations in flight stay the kernel's until their completions arrive;
  // then those JavaScript waits for complete with ECANCELED — only then may it drop the buffers.
  void release_socket(HandleId handle, bool reset) {
    Socket* s = sockets_.find(handle);
    for (Operation* op : {s->poll, s->recv, s->send, s->connect}) {
      if (op != nullptr) op->orphaned = true;
    }
    for (Operation* op : s->accepting) op->orphaned = true;
    for (const auto& read : s->reads) defer({handle, EventKind::kCompleted, kECANCELED, read.op_id});
    for (const auto& write : s->writes) defer({handle, EventKind::kCompleted, kECANCELED, write.op_id});
    for (int32_t op : s->accepts) defer({handle, EventKind::kCompleted, kECANCELED, op});
    if (reset) {
      linger option{1, 0};  // an RST instead of a FIN, as a peer reset would
      setsockopt(s->socket.get(), SOL_SOCKET, SO_LINGER, reinterpret_cast<const char*>(&option), sizeof(option));
    }
    stats_.syscalls += 2;
    CancelIoEx(reinterpret_cast<HANDLE>(s->socket.get()), nullptr);
    sockets_.erase(handle);  // closesocket
  }

  int set_streaming(HandleId handle, bool Socket::*flag, bool on) {
    Socket* s = sockets_.find(handle);
    if (!s) return kEBADF;
    if ((flag == &Socket::streaming_accept) != s->listener) return kEINVAL;
    s->*flag = on;
    return update(handle, *s);
  }

  static bool writable(const Socket& s) { return s.connected && s.send == nullptr && s.writes.empty(); }

  // Brings the socket's operations in flight in line with what is wanted of it, and lists it for
  // the next drain when it has something to report.
  int update(HandleId handle, Socket& s) {
    if (s.listener) return update_listener(handle);
    bool wants_readiness = s.streaming_read || (s.watched & kWantReadable);
    if (wants_readiness && s.connected) {
      if (s.readable || s.read_error != 0) {
        need_attention(handle, s);
      } else if (s.poll == nullptr && s.recv == nullptr) {
        post_poll(handle, s);
      }
    }
    if ((s.watched & kWantWritable) && (writable(s) || s.write_error != 0)) need_attention(handle, s);
    return 0;
  }

  int update_listener(HandleId handle) {
    Socket* s = sockets_.find(handle);
    size_t wanted = s->streaming_accept ? kStreamingAccepts : s->accepts.size() + ((s->watched & kWantReadable) ? 1 : 0);
    if (!s->backlog.empty() && (s->streaming_accept || !s->accepts.empty() || (s->watched & kWantReadable))) {
      need_attention(handle, *s);
    }
    while (live_accepts(*s) + s->backlog.size() < wanted) {
      if (int rc = post_accept(handle, *s); rc < 0) {
        // Out of sockets (EMFILE, ENOBUFS): streaming stops and says so, as epoll's accept does;
        // JavaScript decides when to try again.
        if (s->streaming_accept) {
          s->streaming_accept = false;
          emit({handle, EventKind::kAccepted, rc, 0});
          return 0;
        }
        return rc;
      }
    }
    return 0;
  }

  static size_t live_accepts(const Socket& listener) {
    return static_cast<size_t>(std::count_if(listener.accepting.begin(), listener.accepting.end(), [](const Operation* op) { return !op->cancelled; }));
  }

  // An AcceptEx posted for an accept that was cancelled since is asked back; its pre-created
  // socket closes when it is. One that wins the race leaves its connection in the backlog for
  // the next accept: no connection is dropped.
  void withdraw_surplus_accepts(Socket& listener) {
    if (listener.streaming_accept) return;
    size_t wanted = listener.accepts.size() + ((listener.watched & kWantReadable) ? 1 : 0);
    size_t live = live_accepts(listener);
    for (auto op = listener.accepting.rbegin(); op != listener.accepting.rend() && live + listener.backlog.size() > wanted; ++op) {
      if ((*op)->cancelled) continue;
      (*op)->cancelled = true;
      --live;
      ++stats_.syscalls;
      CancelIoEx(reinterpret_cast<HANDLE>(listener.socket.get()), &(*op)->overlapped);
    }
  }

  void need_attention(HandleId handle, Socket& s) {
    if (!s.in_attention) {
      s.in_attention = true;
      attention_.push_back(handle);
    }
    if (!in_drain_) request_wake();
  }

  void schedule_rearm(HandleId handle, Socket& s) {
    if (!s.in_rearm) {
      s.in_rearm = true;
      rearm_.push_back(handle);
    }
  }

  void rearm() {
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

  void post_poll(HandleId handle, Socket& s) {
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

  int post_recv(HandleId handle, Socket& s, std::span<uint8_t> buffer, int32_t op_id) {
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
    return 0;
  }

  int post_send(Socket& s, Operation* op) {
    WSABUF buf{static_cast<ULONG>(std::min(op->rest.size(), kMaxTransfer)),
               const_cast<char*>(reinterpret_cast<const char*>(op->rest.data()))};
    ++stats_.syscalls;
    if (WSASend(s.socket.get(), &buf, 1, nullptr, 0, &op->overlapped, nullptr) != 0 && WSAGetLastError() != WSA_IO_PENDING) {
      return last_socket_error();
    }
    s.send = op;
    return 0;
  }

  int post_accept(HandleId handle, Socket& listener) {
    UniqueSocket accepted;
    ++stats_.syscalls;
    SOCKET raw = WSASocketW(listener.family, SOCK_STREAM, IPPROTO_TCP, nullptr, 0, WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
    if (raw == INVALID_SOCKET) return last_socket_error();
    accepted.reset(raw);
    Operation* op = acquire(OpKind::kAccept, handle, -1);
    op->accepted = std::move(accepted);
    DWORD received = 0;
    ++stats_.syscalls;
    if (!accept_ex_(listener.socket.get(), op->accepted.get(), op->addresses, 0, kAcceptAddressLength, kAcceptAddressLength,
                    &received, &op->overlapped) &&
        WSAGetLastError() != ERROR_IO_PENDING) {
      int rc = last_socket_error();
      release(op);
      return rc;
    }
    listener.accepting.push_back(op);
    return 0;
  }

  int recv_some(Socket& s, std::span<uint8_t> buffer) {
    ++stats_.syscalls;
    int n = ::recv(s.socket.get(), reinterpret_cast<char*>(buffer.data()), static_cast<int>(std::min(buffer.size(), kMaxTransfer)), 0);
    return n >= 0 ? n : last_socket_error();
  }

  int send_some(Socket& s, std::span<const uint8_t> buffer) {
    ++stats_.syscalls;
    int n = ::send(s.socket.get(), reinterpret_cast<const char*>(buffer.data()), static_cast<int>(std::min(buffer.size(), kMaxTransfer)), 0);
    return n >= 0 ? n : last_socket_error();
  }

  void emit(const Event& event) {
    ++stats_.events;
    if (sink_ != nullptr && !sink_->full()) {
      sink_->push(event);
    } else {
      defer(event);
    }
  }

  void defer(const Event& event) {
    deferred_.push(event);
    if (!in_drain_) request_wake();
  }

  // The error of a completed operation: the completion carries an NTSTATUS, WSAGetOverlappedResult
  // turns it into the Winsock error the rest of the table speaks.
  int operation_error(const Socket& s, Operation* op) {
    DWORD bytes = 0;
    DWORD flags = 0;
    if (WSAGetOverlappedResult(s.socket.get(), &op->overlapped, &bytes, FALSE, &flags)) return 0;
    return last_socket_error();
  }

  void complete(const OVERLAPPED_ENTRY& entry) {
    if (entry.lpCompletionKey == IocpFiles::kFileKey) {
      emit(files_.complete(entry));
      return;
    }
    auto* op = reinterpret_cast<Operation*>(entry.lpOverlapped);
    if (op->orphaned) {
      if (op->op_id >= 0) emit({op->handle, EventKind::kCompleted, kECANCELED, op->op_id});
      release(op);
      return;
    }
    HandleId handle = op->handle;
    Socket* s = sockets_.find(handle);
    bool ok = static_cast<LONG>(op->overlapped.Internal) >= 0;  // NT_SUCCESS
    int error = ok ? 0 : operation_error(*s, op);
    if (!ok && error == 0) error = kUNKNOWN;
    auto bytes = static_cast<size_t>(entry.dwNumberOfBytesTransferred);
    switch (op->kind) {
      case OpKind::kPoll:
        s->poll = nullptr;
        s->readable = true;
        if (error != 0) s->read_error = error;
        release(op);
        update(handle, *s);
        break;
      case OpKind::kRecv:
        s->recv = nullptr;
        emit({handle, EventKind::kCompleted, ok ? static_cast<int>(bytes) : error, op->op_id});
        release(op);
        while (s->recv == nullptr && !s->reads.empty()) {
          PendingRead next = s->reads.front();
          s->reads.erase(s->reads.begin());
          if (int rc = post_recv(handle, *s, next.buffer, next.op_id); rc < 0) emit({handle, EventKind::kCompleted, rc, next.op_id});
        }
        update(handle, *s);
        break;
      case OpKind::kSend:
        complete_send(handle, *s, op, ok ? 0 : error, bytes);
        break;
      case OpKind::kConnect:
        s->connect = nullptr;
        if (ok) {
          // Without it the socket does not know it is connected: getpeername and shutdown fail.
          setsockopt(s->socket.get(), SOL_SOCKET, SO_UPDATE_CONNECT_CONTEXT, nullptr, 0);
          s->connected = true;
        }
        emit({handle, EventKind::kCompleted, error, op->op_id});
        release(op);
        update(handle, *s);
        break;
      case OpKind::kAccept:
        complete_accept(handle, *s, op, error);
        break;
    }
  }

  void complete_send(HandleId handle, Socket& s, Operation* op, int error, size_t bytes) {
    s.send = nullptr;
    if (error == 0 || error == kECANCELED) {
      // A send the kernel gave back cancelled still reports the bytes that went out before. Under
      // wine that count is 0 and nothing went out after the send buffer filled (the speculative
      // prefix in `sent` is what the peer gets, as the torn-write test checks); on Windows, whose
      // AFD may send straight from the caller's pages, it is the kernel's word, untested here.
      bytes = std::min(bytes, op->rest.size());
      op->sent += bytes;
      op->rest = op->rest.subspan(bytes);
      if (op->rest.empty()) error = 0;  // every byte went out before the cancel took hold
    }
    if (error == 0 && !op->rest.empty() && !op->cancelled) {
      // A short send (or a buffer over 1 GiB): continue with the rest.
      error = post_send(s, op);
      if (error == 0) return;
    }
    if (op->cancelled && !op->rest.empty() && (error == 0 || error == kECANCELED)) {
      int32_t op_id = op->op_id;
      size_t sent = op->sent;
      if (sent == 0) {
        emit({handle, EventKind::kCompleted, kECANCELED, op_id});  // withdrawn whole: the queue carries on
      } else {
        // Torn (see Backend::cancel): the count the peer got, and nothing queued may follow it.
        emit({handle, EventKind::kCompleted, static_cast<int32_t>(std::min<size_t>(sent, INT32_MAX)), op_id});
        for (const PendingWrite& write : s.writes) emit({handle, EventKind::kCompleted, kECANCELED, write.op_id});
        s.writes.clear();
        s.write_torn = true;
      }
    } else if (op->op_id >= 0) {
      emit({handle, EventKind::kCompleted, error, op->op_id});
    } else if (error != 0) {
      s.write_error = error;
    }
    release(op);
    while (s.send == nullptr && !s.writes.empty()) {
      PendingWrite next = s.writes.front();
      s.writes.erase(s.writes.begin());
      Operation* write = acquire(OpKind::kSend, handle, next.op_id);
      write->rest = next.buffer;
      if (int rc = post_send(s, write); rc < 0) {
        release(write);
        emit({handle, EventKind::kCompleted, rc, next.op_id});
      }
    }
    update(handle, s);
  }

  void complete_accept(HandleId handle, Socket& listener, Operation* op, int error) {
    listener.accepting.erase(std::find(listener.accepting.begin(), listener.accepting.end(), op));
    if (error == 0) {
      // Gives the accepted socket its listener's properties; getpeername and shutdown need it.
      SOCKET listen_socket = listener.socket.get();
      setsockopt(op->accepted.get(), SOL_SOCKET, SO_UPDATE_ACCEPT_CONTEXT, reinterpret_cast<const char*>(&listen_socket),
                 sizeof(listen_socket));
      listener.backlog.push_back(std::move(op->accepted));
    } else if (op->cancelled) {
      // Withdrawn by cancel(): nobody waits for it, and release() closes its accept socket.
    } else if (error != kECONNRESET && error != kECONNABORTED) {
      // A peer that gave up before we accepted is skipped, as accept(2) does; anything else goes to
      // whoever waits for a connection.
      if (!listener.accepts.empty()) {
        emit({handle, EventKind::kCompleted, error, listener.accepts.front()});
        listener.accepts.erase(listener.accepts.begin());
      } else if (listener.streaming_accept) {
        emit({handle, EventKind::kAccepted, error, 0});
        listener.streaming_accept = false;
      }
    }
    release(op);
    update_listener(handle);
  }

  // Reports what a socket listed for attention has: streamed data, accepted connections,
  // readiness.
  void serve(HandleId handle) {
    Socket* s = sockets_.find(handle);
    if (s == nullptr) return;
    if (s->listener) {
      serve_listener(handle);
      return;
    }
    if (s->streaming_read && (s->readable || s->read_error != 0)) stream_read(handle, *s);
    if ((s->watched & kWantReadable) && (s->readable || s->read_error != 0)) {
      emit({handle, EventKind::kReadable, 0, 0});
      s->readable = false;
      schedule_rearm(handle, *s);
    }
    if ((s->watched & kWantWritable) && (writable(*s) || s->write_error != 0)) {
      emit({handle, EventKind::kWritable, 0, 0});
      schedule_rearm(handle, *s);
    }
  }

  void stream_read(HandleId handle, Socket& s) {
    std::span<uint8_t> space = sink_->arena_space(kMaxStreamRead);
    if (space.empty()) {  // the batch is full of data: the next drain continues
      need_attention(handle, s);
      return;
    }
    int n = s.read_error != 0 ? std::exchange(s.read_error, 0) : recv_some(s, space);
    if (n == kEAGAIN) {
      s.readable = false;
      update(handle, s);
      return;
    }
    int32_t offset = n > 0 ? sink_->commit_arena(static_cast<size_t>(n)) : 0;
    emit({handle, EventKind::kData, n, offset});
    if (n <= 0) {
      s.streaming_read = false;  // after EOF or an error the socket stays readable for ever
    } else if (static_cast<size_t>(n) == space.size()) {
      need_attention(handle, s);  // there may be more: read again in the next drain
    } else {
      // Short read: the socket is most likely empty. The zero-byte read says so for certain, and
      // completes at once if it is not.
      s.readable = false;
      update(handle, s);
    }
  }

  void serve_listener(HandleId handle) {
    Socket* s = sockets_.find(handle);
    while (!s->backlog.empty() && (!s->accepts.empty() || s->streaming_accept)) {
      if (sink_->full()) {
        need_attention(handle, *s);
        return;
      }
      int result = adopt_connection(take_backlog(*s));
      s = sockets_.find(handle);  // inserting may have moved it
      if (!s->accepts.empty()) {
        emit({handle, EventKind::kCompleted, result, s->accepts.front()});
        s->accepts.erase(s->accepts.begin());
      } else {
        emit({handle, EventKind::kAccepted, result, 0});
      }
    }
    if ((s->watched & kWantReadable) && !s->backlog.empty()) {
      emit({handle, EventKind::kReadable, 0, 0});
      schedule_rearm(handle, *s);
    }
    update_listener(handle);
  }

  std::unique_ptr<WinsockSession> winsock_;
  UniqueHandle port_;
  LPFN_ACCEPTEX accept_ex_;
  LPFN_CONNECTEX connect_ex_;
  UniqueHandle thread_;
  BackendInfo info_;
  HandleTable<Socket> sockets_;
  EventQueue deferred_;
  Stats stats_;
  BatchSink* sink_ = nullptr;  // during drain()
  bool in_drain_ = false;
  std::vector<HandleId> attention_;
  std::vector<HandleId> serving_;
  std::vector<HandleId> rearm_;
  std::vector<HandleId> rearming_;
  iocp::OperationPool<Operation> operations_;
  std::vector<OVERLAPPED_ENTRY> ready_;  // the batch drain() works on
  IocpFiles files_{port_.get()};

  // Shared with the waiting thread through its own atomics.
  IocpTimers timers_{port_.get(), kTimerWakeKey};

  // Shared with the waiting thread.
  Lock lock_;
  std::vector<OVERLAPPED_ENTRY> completed_;  // guarded by lock_
  std::atomic<bool> wake_pending_{false};
  std::atomic<void (*)(void*)> wake_{nullptr};
  void* wake_context_ = nullptr;  // written before the thread starts
};

// The extension functions come from the provider of the socket, as Microsoft documents; the same
// pointers serve IPv4 and IPv6 TCP sockets.
template <typename Fn>
bool load_extension(SOCKET socket, GUID guid, Fn& out) {
  DWORD bytes = 0;
  return WSAIoctl(socket, SIO_GET_EXTENSION_FUNCTION_POINTER, &guid, sizeof(guid), &out, sizeof(out), &bytes, nullptr, nullptr) == 0;
}

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
  UniqueSocket probe(WSASocketW(AF_INET, SOCK_STREAM, IPPROTO_TCP, nullptr, 0, WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT));
  LPFN_ACCEPTEX accept_ex = nullptr;
  LPFN_CONNECTEX connect_ex = nullptr;
  if (!probe || !load_extension(probe.get(), WSAID_ACCEPTEX, accept_ex) || !load_extension(probe.get(), WSAID_CONNECTEX, connect_ex)) {
    error = last_socket_error();
    reason = "cannot load AcceptEx/ConnectEx";
    return nullptr;
  }
  return std::make_unique<IocpBackend>(std::move(winsock), std::move(port), accept_ex, connect_ex);
}

const BackendRegistration kRegistration({"iocp", make_iocp_backend, 10});

}  // namespace
}  // namespace twinloop
