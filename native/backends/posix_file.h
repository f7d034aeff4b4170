// open(2) flags from the portable FileOpenOptions, shared by the POSIX backends.
#pragma once

#include <fcntl.h>

#include <cerrno>

#include "../core/backend.h"

namespace twinloop {

// Returns 0 and sets `flags`, or -ENOTSUP for O_DIRECT where the OS has none.
inline int posix_open_flags(const FileOpenOptions& options, int& flags) {
  flags = (options.read && options.write ? O_RDWR : options.write ? O_WRONLY : O_RDONLY) | O_CLOEXEC;
  if (options.create) flags |= O_CREAT;
  if (options.truncate) flags |= O_TRUNC;
  if (options.append) flags |= O_APPEND;
  if (options.exclusive) flags |= O_EXCL;
  if (options.direct) {
#ifdef O_DIRECT
    flags |= O_DIRECT;
#else
    return kENOTSUP;
#endif
  }
  return 0;
}

}  // namespace twinloop
