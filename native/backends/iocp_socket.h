// Winsock helpers of the IOCP backend: the completion keys, RAII owners for sockets and handles, a
// lock, the pool of operations, addresses, socket setup (overlapped sockets, AcceptEx/ConnectEx), and the
// translation of Winsock/Win32 errors into the libuv numbering of core/errors.h. Every function
// returns >= 0 or a negative libuv error and never throws.
#pragma once

#include <winsock2.h>
#include <windows.h>
#include <ws2tcpip.h>
#include <mswsock.h>

#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "../core/backend.h"

namespace twinloop {

// A GetLastError()/WSAGetLastError() value as a negative libuv error number.
int translate_system_error(unsigned long error);

namespace iocp {

inline int last_socket_error() { return translate_system_error(static_cast<unsigned long>(WSAGetLastError())); }

// What a packet on a loop's completion port is, told by the key its handle was tied to the port
// with (CreateIoCompletionPort) or it was posted with (PostQueuedCompletionStatus). Every key is
// here, so that no two can mean the same.
enum class CompletionKey : ULONG_PTR {
  kSocket,     // a socket operation: the OVERLAPPED is an IocpBackend Operation
  kStop,       // no OVERLAPPED: the waiting thread ends
  kTimerWake,  // no OVERLAPPED: the waiting thread recomputes its timeout (IocpTimers)
  kFile,       // a file operation: the OVERLAPPED is an IocpFiles Operation
};
inline ULONG_PTR to_key(CompletionKey key) { return static_cast<ULONG_PTR>(key); }
inline CompletionKey key_of(const OVERLAPPED_ENTRY& entry) { return static_cast<CompletionKey>(entry.lpCompletionKey); }

// Operations the kernel knows by their OVERLAPPED's address: recycled rather than allocated per
// operation, and handed out zeroed where the kernel reads them. An Op begins with its OVERLAPPED.
template <typename Op>
class OperationPool {
 public:
  Op* acquire() {
    Op* op;
    if (free_.empty()) {
      op = new Op;
    } else {
      op = free_.back().release();
      free_.pop_back();
    }
    std::memset(&op->overlapped, 0, sizeof(op->overlapped));
    ++in_flight_;
    return op;
  }
  void release(Op* op) {
    --in_flight_;
    free_.emplace_back(op);
  }
  // Acquired and not released: what the kernel may still write into.
  size_t in_flight() const { return in_flight_; }

 private:
  std::vector<std::unique_ptr<Op>> free_;
  size_t in_flight_ = 0;
};

// Owns one socket; closing is the destructor's job.
class UniqueSocket {
 public:
  UniqueSocket() = default;
  explicit UniqueSocket(SOCKET socket) : socket_(socket) {}
  UniqueSocket(UniqueSocket&& other) noexcept : socket_(std::exchange(other.socket_, INVALID_SOCKET)) {}
  UniqueSocket& operator=(UniqueSocket&& other) noexcept {
    if (this != &other) reset(std::exchange(other.socket_, INVALID_SOCKET));
    return *this;
  }
  UniqueSocket(const UniqueSocket&) = delete;
  UniqueSocket& operator=(const UniqueSocket&) = delete;
  ~UniqueSocket() { reset(); }

  SOCKET get() const { return socket_; }
  explicit operator bool() const { return socket_ != INVALID_SOCKET; }
  void reset(SOCKET socket = INVALID_SOCKET) {
    if (socket_ != INVALID_SOCKET) closesocket(socket_);
    socket_ = socket;
  }

 private:
  SOCKET socket_ = INVALID_SOCKET;
};

class UniqueHandle {
 public:
  explicit UniqueHandle(HANDLE handle = nullptr) : handle_(handle) {}
  UniqueHandle(UniqueHandle&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
  UniqueHandle& operator=(UniqueHandle&& other) noexcept {
    if (this != &other) {
      close();
      handle_ = std::exchange(other.handle_, nullptr);
    }
    return *this;
  }
  UniqueHandle(const UniqueHandle&) = delete;
  UniqueHandle& operator=(const UniqueHandle&) = delete;
  ~UniqueHandle() { close(); }
  HANDLE get() const { return handle_; }
  HANDLE release() { return std::exchange(handle_, nullptr); }

 private:
  void close() {
    if (handle_ != nullptr) CloseHandle(handle_);
  }
  HANDLE handle_;
};

// A slim reader/writer lock used exclusively: pointer-sized, never allocates, and the same on
// MSVC and every MinGW thread model.
class Lock {
 public:
  void lock() { AcquireSRWLockExclusive(&lock_); }
  void unlock() { ReleaseSRWLockExclusive(&lock_); }

 private:
  SRWLOCK lock_ = SRWLOCK_INIT;
};

class LockGuard {
 public:
  explicit LockGuard(Lock& lock) : lock_(lock) { lock_.lock(); }
  ~LockGuard() { lock_.unlock(); }
  LockGuard(const LockGuard&) = delete;
  LockGuard& operator=(const LockGuard&) = delete;

 private:
  Lock& lock_;
};

// WSAStartup is counted per call: each backend holds one reference for its lifetime.
class WinsockSession {
 public:
  WinsockSession() {
    WSADATA data;
    ok_ = WSAStartup(MAKEWORD(2, 2), &data) == 0;
  }
  ~WinsockSession() {
    if (ok_) WSACleanup();
  }
  WinsockSession(const WinsockSession&) = delete;
  WinsockSession& operator=(const WinsockSession&) = delete;
  bool ok() const { return ok_; }

 private:
  bool ok_ = false;
};

struct SockAddr {
  sockaddr_storage storage{};
  int length = 0;
  const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&storage); }
};
int to_sockaddr(const SocketAddress& address, SockAddr& out);
// Fills `out` from the socket's local or peer address; returns the port.
int socket_address(SOCKET socket, bool peer, SocketAddress& out);

inline void enable(SOCKET socket, int level, int option, BOOL on = TRUE) {
  setsockopt(socket, level, option, reinterpret_cast<const char*>(&on), sizeof(on));
}

// Backend::set_socket_option and Backend::socket_option for a socket.
int set_socket_option(SOCKET socket, SocketOption option, int value);
int socket_option(SOCKET socket, SocketOption option);

// An overlapped TCP socket that no child process inherits; invalid when WSASocketW failed, and
// last_socket_error() says why.
UniqueSocket open_tcp_socket(int family);

// The extension functions come from the provider of the socket, as Microsoft documents; the same
// pointers serve IPv4 and IPv6 TCP sockets.
struct SocketExtensions {
  LPFN_ACCEPTEX accept_ex = nullptr;
  LPFN_CONNECTEX connect_ex = nullptr;
};
int load_socket_extensions(SocketExtensions& out);

}  // namespace iocp
}  // namespace twinloop
