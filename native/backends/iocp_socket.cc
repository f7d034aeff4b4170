#include "iocp_socket.h"

#include <mstcpip.h>

namespace twinloop {

// The rows are the socket and file rows of libuv's uv_translate_sys_error (src/win/error.c), which
// Node's own net and fs report — except ERROR_ACCESS_DENIED, which stays EACCES (libuv says EPERM)
// as it always has for sockets here.
int translate_system_error(unsigned long error) {
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
    case ERROR_PIPE_BUSY:  // every instance of a named pipe is connected: as libuv says it
      return kEBUSY;
    case WSAETIMEDOUT:
    case ERROR_SEM_TIMEOUT:
      return kETIMEDOUT;
    default:
      return kUNKNOWN;
  }
}

namespace iocp {

int to_sockaddr(const SocketAddress& address, SockAddr& out) {
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

int socket_address(SOCKET socket, bool peer, SocketAddress& out) {
  sockaddr_storage storage{};
  int length = sizeof(storage);
  auto* raw = reinterpret_cast<sockaddr*>(&storage);
  int rc = peer ? getpeername(socket, raw, &length) : getsockname(socket, raw, &length);
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

int set_socket_option(SOCKET socket, SocketOption option, int value) {
  DWORD flag = value != 0 ? 1 : 0;
  switch (option) {
    case SocketOption::kNoDelay:
      return setsockopt(socket, IPPROTO_TCP, TCP_NODELAY, reinterpret_cast<const char*>(&flag), sizeof(flag)) == 0 ? 0 : last_socket_error();
    case SocketOption::kKeepAlive:
      return setsockopt(socket, SOL_SOCKET, SO_KEEPALIVE, reinterpret_cast<const char*>(&flag), sizeof(flag)) == 0 ? 0 : last_socket_error();
    case SocketOption::kKeepAliveIdle: {
      if (value < 1) return kEINVAL;
      // SIO_KEEPALIVE_VALS exists on every Windows (TCP_KEEPIDLE only from 10 1709); a probe a
      // second once idle, as libuv sets it; Windows gives up after 10 unanswered.
      tcp_keepalive values{1, static_cast<ULONG>(value) * 1000, 1000};
      DWORD bytes = 0;
      return WSAIoctl(socket, SIO_KEEPALIVE_VALS, &values, sizeof(values), nullptr, 0, &bytes, nullptr, nullptr) == 0 ? 0 : last_socket_error();
    }
  }
  return kEINVAL;
}

int socket_option(SOCKET socket, SocketOption option) {
  int level = IPPROTO_TCP, name = TCP_NODELAY;
  if (option == SocketOption::kKeepAlive) {
    level = SOL_SOCKET;
    name = SO_KEEPALIVE;
  } else if (option == SocketOption::kKeepAliveIdle) {
#ifdef TCP_KEEPIDLE
    name = TCP_KEEPIDLE;
#else
    return kENOTSUP;
#endif
  }
  DWORD value = 0;
  int length = sizeof(value);
  if (getsockopt(socket, level, name, reinterpret_cast<char*>(&value), &length) != 0) return last_socket_error();
  if (option != SocketOption::kKeepAliveIdle) return value != 0 ? 1 : 0;
  return static_cast<int>(value);
}

UniqueSocket open_tcp_socket(int family) {
  return UniqueSocket(WSASocketW(family, SOCK_STREAM, IPPROTO_TCP, nullptr, 0, WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT));
}

namespace {

template <typename Fn>
bool load_extension(SOCKET socket, GUID guid, Fn& out) {
  DWORD bytes = 0;
  return WSAIoctl(socket, SIO_GET_EXTENSION_FUNCTION_POINTER, &guid, sizeof(guid), &out, sizeof(out), &bytes, nullptr, nullptr) == 0;
}

}  // namespace

int load_socket_extensions(SocketExtensions& out) {
  UniqueSocket probe = open_tcp_socket(AF_INET);
  if (!probe || !load_extension(probe.get(), WSAID_ACCEPTEX, out.accept_ex) || !load_extension(probe.get(), WSAID_CONNECTEX, out.connect_ex)) {
    return last_socket_error();
  }
  return 0;
}

}  // namespace iocp
}  // namespace twinloop
