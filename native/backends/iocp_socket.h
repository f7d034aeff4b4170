// Winsock helpers of the IOCP backend: RAII owners for sockets and handles, a lock, addresses, and
// the translation of Winsock/Win32 errors into the libuv numbering of iocp_errors.h. Every
// function returns >= 0 or a negative libuv error and never throws.
#pragma once

#include <winsock2.h>
#include <windows.h>
#include <ws2tcpip.h>

#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "../core/backend.h"
#include "iocp_errors.h"

namespace twinloop {

// A GetLastError()/WSAGetLastError() value as a negative libuv error number. The rows are the
// socket and file rows of libuv's uv_translate_sys_error (src/win/error.c), which Node's own net
// and fs report — except ERROR_ACCESS_DENIED, which stays EACCES (libuv says EPERM) as it always
// has for sockets here.
inline int translate_system_error(unsigned long error) {
  using namespace uv_errors;
  switch (error) {
    case 0:
      return 0;
    case ERROR_FILE_NOT_FOUND:
    case ERROR_PATH_NOT_FOUND:
    case ERROR_INVALID_NAME:
    case ERROR_INVALID_DRIVE:
    case ERROR_BAD_PATHNAME:
    case ERROR_DIRECTORY:
      return kENOENT;
    case ERROR_FILE_EXISTS:
    case ERROR_ALREADY_EXISTS:
      return kEEXIST;
    case ERROR_INVALID_FUNCTION:  // ReadFile/WriteFile on a directory handle
      return kEISDIR;
    case ERROR_SHARING_VIOLATION:
    case ERROR_LOCK_VIOLATION:
      return kEBUSY;
    case ERROR_DISK_FULL:
    case ERROR_HANDLE_DISK_FULL:
      return kENOSPC;
    case ERROR_WRITE_PROTECT:
      return kEROFS;
    case ERROR_FILENAME_EXCED_RANGE:
      return kENAMETOOLONG;
    case ERROR_CANT_ACCESS_FILE:
      return kEACCES;
    case ERROR_NEGATIVE_SEEK:
      return kEINVAL;
    case ERROR_INVALID_FLAGS:
      return kEBADF;
    case ERROR_IO_DEVICE:
    case ERROR_CRC:
      return kEIO;
    case WSAEACCES:
    case ERROR_ACCESS_DENIED:
      return kEACCES;
    case WSAEADDRINUSE:
    case ERROR_ADDRESS_ALREADY_ASSOCIATED:
      return kEADDRINUSE;
    case WSAEADDRNOTAVAIL:
      return kEADDRNOTAVAIL;
    case WSAEAFNOSUPPORT:
      return kEAFNOSUPPORT;
    case WSAEWOULDBLOCK:
      return kEAGAIN;
    case WSAEALREADY:
      return kEALREADY;
    case WSAENOTSOCK:
      return kENOTSOCK;
    case ERROR_INVALID_HANDLE:
      return kEBADF;
    case ERROR_OPERATION_ABORTED:  // also WSA_OPERATION_ABORTED
    case WSAEINTR:
      return kECANCELED;
    case WSAECONNABORTED:
    case ERROR_CONNECTION_ABORTED:
      return kECONNABORTED;
    case WSAECONNREFUSED:
    case ERROR_CONNECTION_REFUSED:
      return kECONNREFUSED;
    case WSAECONNRESET:
    case ERROR_NETNAME_DELETED:
      return kECONNRESET;
    case WSAEFAULT:
      return kEFAULT;
    case WSAEHOSTUNREACH:
    case ERROR_HOST_UNREACHABLE:
      return kEHOSTUNREACH;
    case WSAEINVAL:
    case ERROR_INVALID_PARAMETER:
      return kEINVAL;
    case WSAEISCONN:
      return kEISCONN;
    case WSAEMFILE:
    case ERROR_TOO_MANY_OPEN_FILES:
      return kEMFILE;
    case WSAEMSGSIZE:
      return kEMSGSIZE;
    case WSAENETDOWN:
      return kENETDOWN;
    case WSAENETUNREACH:
    case ERROR_NETWORK_UNREACHABLE:
      return kENETUNREACH;
    case WSAENOBUFS:
      return kENOBUFS;
    case ERROR_NOT_ENOUGH_MEMORY:
    case ERROR_OUTOFMEMORY:
      return kENOMEM;
    case WSAENOTCONN:
    case ERROR_NOT_CONNECTED:
      return kENOTCONN;
    case WSAEOPNOTSUPP:
    case ERROR_NOT_SUPPORTED:
      return kENOTSUP;
    case WSAESHUTDOWN:
      return kEPIPE;
    case WSAEPROTONOSUPPORT:
      return kEPROTONOSUPPORT;
    case WSAETIMEDOUT:
    case ERROR_SEM_TIMEOUT:
      return kETIMEDOUT;
    default:
      return kUNKNOWN;
  }
}

namespace iocp {

using namespace uv_errors;

inline int last_socket_error() { return translate_system_error(static_cast<unsigned long>(WSAGetLastError())); }

// Owns one socket; closing is the destructor's job.
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

inline int to_sockaddr(const SocketAddress& address, SockAddr& out) {
  out = {};
  if (address.family == SocketAddress::Family::kIPv4) {
    auto* in = reinterpret_cast<sockaddr_in*>(&out.storage);
    in->sin_family = AF_INET;
    in->sin_port = htons(address.port);
    if (inet_pton(AF_INET, address.host.c_str(), &in->sin_addr) != 1) return kEINVAL;
    out.length = sizeof(sockaddr_in);
    return 0;
  }
  if (address.family == SocketAddress::Family::kIPv6) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&out.storage);
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(address.port);
    if (inet_pton(AF_INET6, address.host.c_str(), &in6->sin6_addr) != 1) return kEINVAL;
    out.length = sizeof(sockaddr_in6);
    return 0;
  }
  return kEAFNOSUPPORT;
}

inline void enable(SOCKET socket, int level, int option, BOOL on = TRUE) {
  setsockopt(socket, level, option, reinterpret_cast<const char*>(&on), sizeof(on));
}

}  // namespace iocp
}  // namespace twinloop
