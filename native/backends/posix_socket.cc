#include "posix_socket.h"

#include "../core/byte_pool.h"

#include <arpa/inet.h>
#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <string>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/un.h>

namespace twinloop {

namespace {
// Only Linux has the abstract namespace; elsewhere a leading NUL is an embedded one, refused.
#ifdef __linux__
constexpr bool kAbstractNames = true;
#else
constexpr bool kAbstractNames = false;
#endif
}  // namespace

int to_sockaddr(const SocketAddress& address, SockAddrStorage& out) {
  out = {};
  switch (address.family) {
    case SocketAddress::Family::kIPv4: {
      auto* in = reinterpret_cast<sockaddr_in*>(&out.storage);
      in->sin_family = AF_INET;
      in->sin_port = htons(address.port);
      if (inet_pton(AF_INET, address.host.c_str(), &in->sin_addr) != 1) return kEINVAL;
      out.length = sizeof(sockaddr_in);
      return 0;
    }
    case SocketAddress::Family::kIPv6: {
      auto* in6 = reinterpret_cast<sockaddr_in6*>(&out.storage);
      in6->sin6_family = AF_INET6;
      in6->sin6_port = htons(address.port);
      if (inet_pton(AF_INET6, address.host.c_str(), &in6->sin6_addr) != 1) return kEINVAL;
      out.length = sizeof(sockaddr_in6);
      return 0;
    }
    case SocketAddress::Family::kUnix: {
      auto* un = reinterpret_cast<sockaddr_un*>(&out.storage);
      un->sun_family = AF_UNIX;
      const std::string& name = address.host;
      // A leading NUL names Linux's abstract namespace, where a name is bytes and its length is the
      // address length (unix(7)): with a NUL added, "\0name" would be another name than the one
      // node:net or Python bind and connect to. A path is NUL-terminated, and fits with its NUL.
      bool abstract = kAbstractNames && !name.empty() && name[0] == '\0';
      if (name.empty() || name.size() > sizeof(un->sun_path) - (abstract ? 0 : 1)) return kENAMETOOLONG;
      // The kernel takes a path up to its first NUL: "/run/sock\0x" would bind "/run/sock".
      if (!abstract && name.find('\0') != std::string::npos) return kEINVAL;
      std::memcpy(un->sun_path, name.data(), name.size());
      out.length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size() + (abstract ? 0 : 1));
      return 0;
    }
  }
  return kEAFNOSUPPORT;
}

int socket_address(int fd, bool peer, SocketAddress& out) {
  SockAddrStorage addr;
  addr.length = sizeof(addr.storage);
  auto* raw = reinterpret_cast<sockaddr*>(&addr.storage);
  int rc = peer ? getpeername(fd, raw, &addr.length) : getsockname(fd, raw, &addr.length);
  if (rc != 0) return -errno;
  char text[INET6_ADDRSTRLEN] = {};
  switch (addr.storage.ss_family) {
    case AF_INET: {
      auto* in = reinterpret_cast<sockaddr_in*>(raw);
      inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text));
      out = {SocketAddress::Family::kIPv4, text, ntohs(in->sin_port)};
      return out.port;
    }
    case AF_INET6: {
      auto* in6 = reinterpret_cast<sockaddr_in6*>(raw);
      inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof(text));
      out = {SocketAddress::Family::kIPv6, text, ntohs(in6->sin6_port)};
      return out.port;
    }
    case AF_UNIX: {
      auto* un = reinterpret_cast<sockaddr_un*>(raw);
      size_t room = addr.length > offsetof(sockaddr_un, sun_path) ? addr.length - offsetof(sockaddr_un, sun_path) : 0;
      // An abstract name (leading NUL) is all the bytes the address length covers; a path ends at
      // its NUL; an unnamed socket has neither.
      bool abstract = kAbstractNames && room > 0 && un->sun_path[0] == '\0';
      size_t name_length = abstract ? room : strnlen(un->sun_path, room);
      out = {SocketAddress::Family::kUnix, std::string(un->sun_path, name_length), 0};
      return 0;
    }
    default:
      return kEAFNOSUPPORT;
  }
}

namespace {
int enable(int fd, int level, int option) {
  int on = 1;
  return setsockopt(fd, level, option, &on, sizeof(on)) == 0 ? 0 : -errno;
}

#ifndef SOCK_NONBLOCK
// What SOCK_NONBLOCK | SOCK_CLOEXEC (and accept4) do atomically where the OS lacks them (macOS):
// the flags are set right after creation, as libuv does there. A fork+exec in another thread in
// between can leak the descriptor into the child; nothing closes that window on macOS.
int make_nonblocking_cloexec(int fd) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) return -errno;
  return fcntl(fd, F_SETFD, FD_CLOEXEC) == 0 ? 0 : -errno;
}
#endif

// macOS has no MSG_NOSIGNAL for send(): the socket itself must be told not to raise SIGPIPE.
int suppress_sigpipe(int fd) {
#ifdef __APPLE__
  return enable(fd, SOL_SOCKET, SO_NOSIGPIPE);
#else
  (void)fd;
  return 0;
#endif
}

int open_socket(const SockAddrStorage& addr, UniqueFd& out) {
#ifdef SOCK_NONBLOCK
  UniqueFd fd(::socket(addr.storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return -errno;
#else
  UniqueFd fd(::socket(addr.storage.ss_family, SOCK_STREAM, 0));
  if (!fd) return -errno;
  if (int rc = make_nonblocking_cloexec(fd.get()); rc < 0) return rc;
#endif
  if (int rc = suppress_sigpipe(fd.get()); rc < 0) return rc;
  out = std::move(fd);
  return 0;
}
}  // namespace

int open_listener(const SocketAddress& address, const ListenOptions& options, UniqueFd& out) {
  SockAddrStorage addr;
  if (int rc = to_sockaddr(address, addr); rc < 0) return rc;
  UniqueFd fd;
  if (int rc = open_socket(addr, fd); rc < 0) return rc;
  if (address.family != SocketAddress::Family::kUnix) {
    // As Node's net does: a restarted server can bind while old connections sit in TIME_WAIT.
    if (int rc = enable(fd.get(), SOL_SOCKET, SO_REUSEADDR); rc < 0) return rc;
    if (options.reuse_port) {
      if (int rc = enable(fd.get(), SOL_SOCKET, SO_REUSEPORT); rc < 0) return rc;
    }
    if (address.family == SocketAddress::Family::kIPv6 && options.ipv6_only) {
      if (int rc = enable(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY); rc < 0) return rc;
    }
  }
  if (::bind(fd.get(), addr.get(), addr.length) != 0) return -errno;
  if (::listen(fd.get(), options.backlog) != 0) return -errno;
  out = std::move(fd);
  return 0;
}

int open_client_socket(const SocketAddress& address, const SocketAddress* local, UniqueFd& out) {
  SockAddrStorage addr;
  if (int rc = to_sockaddr(address, addr); rc < 0) return rc;
  SockAddrStorage local_addr;
  if (local != nullptr) {
    if (int rc = to_sockaddr(*local, local_addr); rc < 0) return rc;
    if (local_addr.storage.ss_family != addr.storage.ss_family) return kEAFNOSUPPORT;
  }
  UniqueFd fd;
  if (int rc = open_socket(addr, fd); rc < 0) return rc;
  if (address.family != SocketAddress::Family::kUnix) set_no_delay(fd.get());
  if (local != nullptr && ::bind(fd.get(), local_addr.get(), local_addr.length) != 0) return -errno;
  out = std::move(fd);
  return 0;
}

int start_connect(const SocketAddress& address, const SocketAddress* local, UniqueFd& out) {
  SockAddrStorage addr;
  if (int rc = to_sockaddr(address, addr); rc < 0) return rc;
  UniqueFd fd;
  if (int rc = open_client_socket(address, local, fd); rc < 0) return rc;
  int rc = ::connect(fd.get(), addr.get(), addr.length) == 0 ? 0 : -errno;
  if (rc == kEAGAIN) rc = kEINPROGRESS;  // Unix sockets say EAGAIN when the backlog is full
  if (rc != 0 && rc != kEINPROGRESS) return rc;
  out = std::move(fd);
  return rc;
}

int pending_socket_error(int fd) {
  int error = 0;
  socklen_t length = sizeof(error);
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0) return -errno;
  return -error;
}

int accept_connection(int listen_fd) {
  sockaddr_storage peer;
  socklen_t length = sizeof(peer);
#ifdef SOCK_NONBLOCK
  int fd = ::accept4(listen_fd, reinterpret_cast<sockaddr*>(&peer), &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0) return -errno;
#else
  int fd = ::accept(listen_fd, reinterpret_cast<sockaddr*>(&peer), &length);
  if (fd < 0) return -errno;
  if (int rc = make_nonblocking_cloexec(fd); rc < 0) {
    ::close(fd);
    return rc;
  }
#endif
  suppress_sigpipe(fd);
  if (peer.ss_family != AF_UNIX) set_no_delay(fd);
  return fd;
}

void set_no_delay(int fd) { enable(fd, IPPROTO_TCP, TCP_NODELAY); }

namespace {
int set_int(int fd, int level, int option, int value) {
  return setsockopt(fd, level, option, &value, sizeof(value)) == 0 ? 0 : -errno;
}

int get_int(int fd, int level, int option) {
  int value = 0;
  socklen_t length = sizeof(value);
  if (getsockopt(fd, level, option, &value, &length) != 0) return -errno;
  return value;
}

// The idle time before the first keep-alive probe: TCP_KEEPIDLE, which macOS calls TCP_KEEPALIVE.
#ifdef TCP_KEEPIDLE
constexpr int kKeepIdle = TCP_KEEPIDLE;
#else
constexpr int kKeepIdle = TCP_KEEPALIVE;
#endif

// Linux refuses an idle time above MAX_TCP_KEEPIDLE (include/net/tcp.h, not in the userspace
// headers) with EINVAL; asked for longer, keep-alive goes on as late as allowed, where node:net
// ignores the failure and leaves the system's delay. macOS and FreeBSD take up to UINT_MAX / 1000 s,
// more than the 2^31 - 1 ms lib/ lets through.
#ifdef __linux__
constexpr int kMaxKeepIdleSeconds = 32767;
#else
constexpr int kMaxKeepIdleSeconds = std::numeric_limits<int>::max();
#endif
}  // namespace

int set_socket_option(int fd, SocketOption option, int value) {
  switch (option) {
    case SocketOption::kNoDelay:
      return set_int(fd, IPPROTO_TCP, TCP_NODELAY, value != 0 ? 1 : 0);
    case SocketOption::kKeepAlive:
      return set_int(fd, SOL_SOCKET, SO_KEEPALIVE, value != 0 ? 1 : 0);
    case SocketOption::kKeepAliveIdle: {
      if (value < 1) return kEINVAL;
      if (int rc = set_int(fd, IPPROTO_TCP, kKeepIdle, std::min(value, kMaxKeepIdleSeconds)); rc < 0) return rc;
      // As libuv's uv_tcp_keepalive: a probe a second once idle, the peer dead after 10 unanswered
      // (Windows' fixed values), instead of the kernel's 75 s x 9.
#ifdef TCP_KEEPINTVL
      if (int rc = set_int(fd, IPPROTO_TCP, TCP_KEEPINTVL, 1); rc < 0) return rc;
#endif
#ifdef TCP_KEEPCNT
      if (int rc = set_int(fd, IPPROTO_TCP, TCP_KEEPCNT, 10); rc < 0) return rc;
#endif
      return 0;
    }
  }
  return kEINVAL;
}

int socket_option(int fd, SocketOption option) {
  // A flag reads back as any non-zero value (macOS says 4 for TCP_NODELAY): 1 here.
  auto flag = [](int value) { return value > 0 ? 1 : value; };
  switch (option) {
    case SocketOption::kNoDelay:
      return flag(get_int(fd, IPPROTO_TCP, TCP_NODELAY));
    case SocketOption::kKeepAlive:
      return flag(get_int(fd, SOL_SOCKET, SO_KEEPALIVE));
    case SocketOption::kKeepAliveIdle:
      return get_int(fd, IPPROTO_TCP, kKeepIdle);
  }
  return kEINVAL;
}

void set_reset_on_close(int fd) {
  linger option{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &option, sizeof(option));
}

int recv_some(int fd, std::span<uint8_t> buffer) {
  ssize_t n = ::recv(fd, buffer.data(), std::min(buffer.size(), kMaxTransfer), 0);
  return n >= 0 ? static_cast<int>(n) : -errno;
}

// A peer that went away must be an EPIPE error, not a SIGPIPE that kills Node: MSG_NOSIGNAL where
// send() has it, else the socket's SO_NOSIGPIPE (suppress_sigpipe).
#ifdef MSG_NOSIGNAL
constexpr int kSendFlags = MSG_NOSIGNAL;
#else
constexpr int kSendFlags = 0;
#endif

int send_some(int fd, std::span<const uint8_t> buffer) {
  size_t length = std::min(buffer.size(), kMaxTransfer);
  ssize_t n = ::send(fd, buffer.data(), length, kSendFlags);
#ifdef __APPLE__
  // macOS can fail a send with EPROTOTYPE while the peer tears the connection down; libuv retries
  // (src/unix/stream.c), and the retry returns the real error (EPIPE) or succeeds.
  while (n < 0 && errno == EPROTOTYPE) n = ::send(fd, buffer.data(), length, kSendFlags);
#endif
  return n >= 0 ? static_cast<int>(n) : -errno;
}

}  // namespace twinloop
