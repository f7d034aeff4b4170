// The IOCP backend's class and its per-socket state, shared by the files that implement it:
//   iocp.cc             the design (read it first), the backend's lifetime, and the calls JavaScript
//                       makes on sockets: listen/connect/close, reactor, proactor, cancel
//   iocp_dispatch.cc    from the port to events: the waiting thread, drain(), each kind of
//                       completion, and serving the sockets listed for attention
//   iocp_operations.cc  the overlapped operations: posting them, and keeping those of a socket in
//                       line with what is wanted of it (level-triggered readiness)
//   iocp_socket.{h,cc}  Winsock helpers: owners, errors, addresses, AcceptEx/ConnectEx
//   iocp_timers.h, iocp_files.{h,cc}  timers and regular files, on the same port
#pragma once

#include <winsock2.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "../core/backend.h"
#include "../core/event_outbox.h"
#include "../core/handle_table.h"
#include "../core/socket_operations.h"
#include "iocp_files.h"
#include "iocp_socket.h"
#include "iocp_timers.h"

namespace twinloop::iocp {

// AcceptEx wants room for each address plus 16 bytes.
inline constexpr DWORD kAcceptAddressLength = sizeof(sockaddr_storage) + 16;
// Queued writes one WSASend carries (as io_uring's sendmsg, kMaxIov): one completion per queued
// write made 10 000 one-byte writes behind a full socket take 27.7 s under wine (epoll: 138 ms).
inline constexpr size_t kMaxGatheredWrites = 64;

enum class OpKind : uint8_t { kPoll, kRecv, kSend, kAccept, kConnect };

// 392 bytes (x64), most of it AcceptEx's address area; pooled, so a busy loop allocates none.
struct Operation {
  OVERLAPPED overlapped;  // first: a completion's OVERLAPPED* is the Operation*
  OpKind kind = OpKind::kPoll;
  bool orphaned = false;  // its socket was closed: the completion only returns it to the pool
  bool cancelled = false;  // cancel() asked the kernel to give it back (CancelIoEx)
  HandleId handle = -1;
  int32_t op_id = -1;     // >= 0: a proactor operation JavaScript waits for
  // kSend of queued writes: the op_ids of the writes it carries, each completed with ECANCELED
  // if the socket was closed under it (kept with the pooled Operation, so it allocates once).
  std::vector<int32_t> carried;
  std::unique_ptr<uint8_t[]> staging;     // kSend for try_write: our copy of the caller's bytes
  std::span<const uint8_t> rest;          // kSend for try_write: what of `staging` is not sent yet
  UniqueSocket accepted;                  // kAccept: the socket AcceptEx connects
  char addresses[2 * kAcceptAddressLength];
};
static_assert(offsetof(Operation, overlapped) == 0, "completions are mapped back by address");

// Per-socket state, 192 bytes (x64, measured) plus queues that allocate at the first proactor
// operation and keep their capacity: the operations JavaScript asked for (SocketOperations; the
// kernel holds the head read while `recv` is in flight, the first `writes_held` writes while
// `send` is a proactor one, the connect while `connect` is) and the overlapped calls in flight for them. No
// per-connection read buffer: readiness comes from zero-byte reads, so an idle connection pins no
// memory in the kernel either.
struct Socket : SocketOperations {
  UniqueSocket socket;
  int family = AF_INET;
  bool connected = false;       // accepted sockets at once, clients once ConnectEx completed
  bool readable = false;        // a zero-byte read completed and nobody has found the socket empty since
  bool in_attention = false;    // listed in IocpBackend::attention_
  bool in_rearm = false;        // listed in IocpBackend::rearm_
  // An error a zero-byte read or a background send found: reported by the next read or write,
  // because the socket may not report it a second time.
  int read_error = 0;
  int write_error = 0;
  Operation* poll = nullptr;     // zero-byte WSARecv in flight
  Operation* recv = nullptr;     // WSARecv of the head read in flight
  Operation* send = nullptr;     // WSASend in flight: the first queued writes', or a try_write's own
  Operation* connect = nullptr;  // ConnectEx in flight
  std::vector<Operation*> accepting;  // listener: AcceptEx in flight, for whichever accept comes
  std::vector<UniqueSocket> backlog;  // listener: accepted connections nobody has taken yet
};

class IocpBackend final : public Backend {
 public:
  IocpBackend(std::unique_ptr<WinsockSession> winsock, UniqueHandle port, SocketExtensions extensions);
  ~IocpBackend() override;

  const BackendInfo& info() const override { return info_; }
  int poll_fd() const override { return -1; }
  void set_wake(void (*wake)(void* context), void* context) override;

  // Sockets (iocp.cc).
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
  int file_cancel(HandleId file, int32_t op_id) override { return files_.cancel(file, op_id); }

  // From the port to events (iocp_dispatch.cc).
  void drain(BatchSink& sink) override;
  void flush() override;

  Stats stats() const override;

 private:
  // The waiting thread (iocp_dispatch.cc).
  static DWORD WINAPI wait_loop(void* self);
  void wait_for_completions();
  void request_wake();

  // Sockets opened, adopted and closed (iocp.cc).
  int open_socket(int family, UniqueSocket& out);
  int prepare(SOCKET socket);
  HandleId insert(Socket socket);
  int adopt_connection(UniqueSocket socket);
  static UniqueSocket take_backlog(Socket& s);
  void reclaim(const OVERLAPPED_ENTRY& entry);
  void release_socket(HandleId handle, bool reset);

  // Operations, and the readiness kept from them (iocp_operations.cc).
  Operation* acquire(OpKind kind, HandleId handle, int32_t op_id);
  void release(Operation* op);
  static bool writable(const Socket& s) { return s.connected && s.send == nullptr && s.writes.empty(); }
  int update(HandleId handle, Socket& s);
  int update_listener(HandleId handle);
  void withdraw_surplus_accepts(Socket& listener);
  void need_attention(HandleId handle, Socket& s);
  void schedule_rearm(HandleId handle, Socket& s);
  void rearm();
  void post_poll(HandleId handle, Socket& s);
  int post_recv(HandleId handle, Socket& s, std::span<uint8_t> buffer, int32_t op_id);
  void post_reads(HandleId handle, Socket& s, bool more_waiting);
  int post_send(Socket& s, Operation* op, std::span<const uint8_t> bytes);
  int post_queued_send(Socket& s, Operation* op);
  void post_writes(HandleId handle, Socket& s);
  void recall(const Socket& s, Operation* op);
  int post_accept(HandleId handle, Socket& listener);
  int recv_some(Socket& s, std::span<uint8_t> buffer);
  int send_some(Socket& s, std::span<const uint8_t> buffer);

  // Completions turned into events (iocp_dispatch.cc).
  int operation_error(const Socket& s, Operation* op);
  void complete(const OVERLAPPED_ENTRY& entry);
  void complete_send(HandleId handle, Socket& s, Operation* op, int error, size_t bytes);
  void complete_staged_send(Socket& s, Operation* op, int error, size_t bytes);
  void complete_accept(HandleId handle, Socket& listener, Operation* op, int error);
  void serve(HandleId handle);
  void stream_read(HandleId handle, Socket& s);
  void serve_listener(HandleId handle);

  std::unique_ptr<WinsockSession> winsock_;
  UniqueHandle port_;
  SocketExtensions extensions_;
  UniqueHandle thread_;
  BackendInfo info_;
  HandleTable<Socket> sockets_;
  EventOutbox outbox_{[](void* self) { static_cast<IocpBackend*>(self)->request_wake(); }, this};
  Stats stats_;
  std::vector<HandleId> attention_;
  std::vector<HandleId> serving_;
  std::vector<HandleId> rearm_;
  std::vector<HandleId> rearming_;
  OperationPool<Operation> operations_;
  std::vector<OVERLAPPED_ENTRY> ready_;  // the batch drain() works on
  IocpFiles files_{port_.get()};

  // Shared with the waiting thread through its own atomics.
  IocpTimers timers_{port_.get()};

  // Shared with the waiting thread.
  Lock lock_;
  std::vector<OVERLAPPED_ENTRY> completed_;  // guarded by lock_
  std::atomic<bool> wake_pending_{false};
  std::atomic<void (*)(void*)> wake_{nullptr};
  void* wake_context_ = nullptr;  // written before the thread starts
};

}  // namespace twinloop::iocp
