// The few error numbers the binding itself returns, or exports for lib/ to compare against, in
// the numbering this platform's backends use: -errno on POSIX, libuv's UV_E* codes on Windows.
#pragma once

#ifdef _WIN32
#include "../backends/iocp_errors.h"
#else
#include <cerrno>
#endif

namespace twinloop::platform_errors {

#ifdef _WIN32
constexpr int kEAGAIN = uv_errors::kEAGAIN;
constexpr int kECANCELED = uv_errors::kECANCELED;
constexpr int kEBADF = uv_errors::kEBADF;
constexpr int kEFAULT = uv_errors::kEFAULT;
constexpr int kENOMEM = uv_errors::kENOMEM;
constexpr int kEMFILE = uv_errors::kEMFILE;
constexpr int kENFILE = uv_errors::kENFILE;
constexpr int kENOSYS = uv_errors::kENOSYS;
constexpr int kETIMEDOUT = uv_errors::kETIMEDOUT;
#else
constexpr int kEAGAIN = -EAGAIN;
constexpr int kECANCELED = -ECANCELED;
constexpr int kEBADF = -EBADF;
constexpr int kEFAULT = -EFAULT;
constexpr int kENOMEM = -ENOMEM;
constexpr int kEMFILE = -EMFILE;
constexpr int kENFILE = -ENFILE;
constexpr int kENOSYS = -ENOSYS;
constexpr int kETIMEDOUT = -ETIMEDOUT;
#endif

}  // namespace twinloop::platform_errors
