// The lifecycle every backend's regular files share, wherever their operations run (the kernel's
// ring, a completion port, a thread pool): a handle per open file, its operations counted while in
// flight, and a close that waits until they are done — closing under a read in flight would let a
// new file reuse the descriptor number it names.
#pragma once

#include <cstdint>
#include <utility>

#include "errors.h"
#include "handle_table.h"

namespace twinloop {

// `Descriptor` owns the OS handle (UniqueFd, UniqueHandle) and has release().
template <typename Descriptor>
class FileTable {
 public:
  struct File {
    Descriptor descriptor;
    bool direct = false;  // opened for O_DIRECT: never in the page cache
    int in_flight = 0;
    int32_t close_op = -1;  // >= 0: close once in_flight drops to 0
  };

  // A file just opened: its handle, or -EMFILE (the descriptor closes with the dropped entry).
  int insert(Descriptor descriptor, bool direct = false) {
    return files_.insert({std::move(descriptor), direct});
  }

  // The file a new operation may start on: null (-EBADF) when the handle is unknown, stale or
  // closing.
  File* usable(HandleId handle) {
    File* file = files_.find(handle);
    return file != nullptr && file->close_op < 0 ? file : nullptr;
  }

  // An operation was handed to the kernel or the pool.
  static void started(File& file) { ++file.in_flight; }

  // file_close(): returns -EBADF, or 0 with `close_now` set when nothing is in flight (the backend
  // then starts the close, itself counted in flight).
  int request_close(HandleId handle, int32_t op_id, bool& close_now) {
    File* file = usable(handle);
    if (file == nullptr) return kEBADF;
    file->close_op = op_id;
    close_now = file->in_flight == 0;
    return 0;
  }

  // An operation of `handle` came back; `was_close` when it was the close, which the OS has done
  // (the entry goes, without closing the number again). Returns the file when its close should
  // start now: the last operation in flight came back with a close waiting.
  File* finished(HandleId handle, bool was_close) {
    File* file = files_.find(handle);
    if (file == nullptr) return nullptr;
    --file->in_flight;
    if (was_close) {
      (void)file->descriptor.release();
      files_.erase(handle);
      return nullptr;
    }
    return file->close_op >= 0 && file->in_flight == 0 ? file : nullptr;
  }

  // Teardown: a descriptor an abandoned worker already closed is forgotten, not closed again.
  void forget(HandleId handle) {
    if (File* file = files_.find(handle)) (void)file->descriptor.release();
  }

  File* find(HandleId handle) { return files_.find(handle); }

  // Every file, as fn(handle, File&): teardown's walk over what is open (cancelling transfers).
  template <typename Fn>
  void for_each(Fn&& fn) {
    files_.for_each(std::forward<Fn>(fn));
  }

 private:
  HandleTable<File> files_;
};

}  // namespace twinloop
