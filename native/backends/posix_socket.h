// BSD-socket helpers shared by the POSIX backends (epoll, kqueue, io_uring): socket creation,
// addresses, and the non-blocking syscalls of the reactor pattern. Every function returns >= 0 or
// a negative errno and never throws.
#pragma once

#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <span>
#include <utility>

#include "../core/backend.h"

namespace twinloop {

// Owns one file descriptor; closing is the destructor's job, never a caller's.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(std::exchange(other.fd_, -1));
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  // Gives up ownership: for a descriptor someone else has closed.
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

struct SockAddrStorage {
  sockaddr_storage storage{};
  socklen_t length = 0;
  const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&storage); }
};

int to_sockaddr(const SocketAddress& address, SockAddrStorage& out);
// Fills `out` from the socket's local or peer address; returns the port (0 for Unix sockets).
int socket_address(int fd, bool peer, SocketAddress& out);

// A non-blocking, close-on-exec listening socket.
int open_listener(const SocketAddress& address, const ListenOptions& options, UniqueFd& out);
// A non-blocking, close-on-exec socket for a connect to `address`, Nagle off for TCP, bound to
// `local` first when given (what io_uring's IORING_OP_CONNECT and start_connect start from).
int open_client_socket(const SocketAddress& address, const SocketAddress* local, UniqueFd& out);
// Starts a non-blocking connect: 0 when connected at once, -EINPROGRESS when the socket will
// become writable once it is done; `out` holds the socket in both cases.
int start_connect(const SocketAddress& address, const SocketAddress* local, UniqueFd& out);
// The pending error of a socket whose connect finished (SO_ERROR), as a negative errno or 0.
int pending_socket_error(int fd);
// Accepts one connection, non-blocking and close-on-exec, with Nagle off.
int accept_connection(int listen_fd);
// Turns Nagle off: an echo server that waits for an ACK before sending adds 40 ms per reply.
// Every TCP socket starts so (see set_socket_option to turn it back on).
void set_no_delay(int fd);
// Backend::set_socket_option and Backend::socket_option for a descriptor.
int set_socket_option(int fd, SocketOption option, int value);
int socket_option(int fd, SocketOption option);
// Makes the next close send an RST (SO_LINGER 0), as a peer reset would.
void set_reset_on_close(int fd);

int recv_some(int fd, std::span<uint8_t> buffer);
int send_some(int fd, std::span<const uint8_t> buffer);

}  // namespace twinloop
