// The error numbers of the backend contract, one set for every platform (libuv's uv-errno.h is the
// model): a backend returns them negated, lib/ names them with util.getSystemErrorName(), and that
// expects -errno on POSIX but libuv's own fixed UV_E* codes on Windows (include/uv/errno.h), not
// the CRT's errno. So kEBADF is -EBADF on POSIX and UV_EBADF (-4083) on Windows; iocp_socket.cc
// translates Winsock and Win32 errors into these. No OS header beyond <cerrno>: the binding
// includes this file for the few numbers it exports to JavaScript (native.errors).
#pragma once

#include <cerrno>

namespace twinloop {

// One line a name: the value on Windows is libuv's; elsewhere the OS's errno, negated. (The
// operands of ## are not macro-expanded, so `k##name` stays kEBADF though EBADF is a macro.)
#ifdef _WIN32
#define TWINLOOP_ERROR(name, uv_value) constexpr int k##name = uv_value;
#else
#define TWINLOOP_ERROR(name, uv_value) constexpr int k##name = -name;
#endif

TWINLOOP_ERROR(EACCES, -4092)
TWINLOOP_ERROR(EADDRINUSE, -4091)
TWINLOOP_ERROR(EADDRNOTAVAIL, -4090)
TWINLOOP_ERROR(EAFNOSUPPORT, -4089)
TWINLOOP_ERROR(EAGAIN, -4088)
TWINLOOP_ERROR(EALREADY, -4084)
TWINLOOP_ERROR(EBADF, -4083)
TWINLOOP_ERROR(EBUSY, -4082)
TWINLOOP_ERROR(ECANCELED, -4081)
TWINLOOP_ERROR(ECONNABORTED, -4079)
TWINLOOP_ERROR(ECONNREFUSED, -4078)
TWINLOOP_ERROR(ECONNRESET, -4077)
TWINLOOP_ERROR(EEXIST, -4075)
TWINLOOP_ERROR(EFAULT, -4074)
TWINLOOP_ERROR(EHOSTUNREACH, -4073)
TWINLOOP_ERROR(EINTR, -4072)
TWINLOOP_ERROR(EINVAL, -4071)
TWINLOOP_ERROR(EIO, -4070)
TWINLOOP_ERROR(EISCONN, -4069)
TWINLOOP_ERROR(EISDIR, -4068)
TWINLOOP_ERROR(EMFILE, -4066)
TWINLOOP_ERROR(EMSGSIZE, -4065)
TWINLOOP_ERROR(ENAMETOOLONG, -4064)
TWINLOOP_ERROR(ENETDOWN, -4063)
TWINLOOP_ERROR(ENETUNREACH, -4062)
TWINLOOP_ERROR(ENFILE, -4061)
TWINLOOP_ERROR(ENOBUFS, -4060)
TWINLOOP_ERROR(ENOENT, -4058)
TWINLOOP_ERROR(ENOMEM, -4057)
TWINLOOP_ERROR(ENOSPC, -4055)
TWINLOOP_ERROR(ENOSYS, -4054)
TWINLOOP_ERROR(ENOTCONN, -4053)
TWINLOOP_ERROR(ENOTDIR, -4052)
TWINLOOP_ERROR(ENOTSOCK, -4050)
TWINLOOP_ERROR(ENOTSUP, -4049)
TWINLOOP_ERROR(EPERM, -4048)
TWINLOOP_ERROR(EPIPE, -4047)
TWINLOOP_ERROR(EPROTONOSUPPORT, -4045)
TWINLOOP_ERROR(EROFS, -4043)
TWINLOOP_ERROR(ETIMEDOUT, -4039)

#undef TWINLOOP_ERROR

#ifdef _WIN32
// What libuv reports for an error it has no name for (a Windows error iocp_socket.cc cannot map).
constexpr int kUNKNOWN = -4094;
#else
// A kernel answer the POSIX backends compare against and never pass on: a non-blocking connect()
// under way.
constexpr int kEINPROGRESS = -EINPROGRESS;
#endif

}  // namespace twinloop
