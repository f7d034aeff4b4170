// The lifecycle every backend's regular files share, wherever their operations run (the kernel's
// ring, a completion port, a thread pool): a handle per open file, its operations counted while in
// flight, and a close that waits until they are done — closing under a read in flight would let a
// new file reuse the descriptor number it names.
//
// And the order of its transfers at the current position (position -1): they share one offset,
// which each one moves, so they run one at a time in submission order, as read(2)/write(2) calls
// on one descriptor would — concurrent ones on a pool's threads or in the kernel (io_uring with
// offset -1) would each take the offset as it happens to be and come out in any order. The
// backend starts the first at once and each next one when the previous completes, whatever its
// result. Positioned transfers do not queue.
#pragma once

#include <cstdint>
#include <span>
#include <utility>

#include "errors.h"
#include "handle_table.h"
#include "socket_operations.h"  // OperationQueue

namespace twinloop {

// A read or a write at the file's current position, as it waits for its turn.
struct PositionTransfer {
  std::span<uint8_t> buffer;  // read into, or written from
  int32_t op_id;
  bool write;
};

// `Descriptor` owns the OS handle (UniqueFd, UniqueHandle) and has release().
template <typename Descriptor>
class FileTable {
 public:
  struct File {
    Descriptor descriptor;
    bool direct = false;  // opened for O_DIRECT: never in the page cache
    int in_flight = 0;    // the queued transfers at the position included
    int32_t close_op = -1;  // >= 0: close once in_flight drops to 0
    bool position_busy = false;  // a transfer at the current position is running
    OperationQueue<PositionTransfer> at_position;  // those waiting for it, in submission order
  };

  // A file just opened: its handle, or -EMFILE (the descriptor closes with the dropped entry).
  int insert(Descriptor descriptor, bool direct = false) {
    File file;
    file.descriptor = std::move(descriptor);
    file.direct = direct;
    return files_.insert(std::move(file));
  }

  // The file a new operation may start on: null (-EBADF) when the handle is unknown, stale or
  // closing.
  File* usable(HandleId handle) {
    File* file = files_.find(handle);
    return file != nullptr && file->close_op < 0 ? file : nullptr;
  }

  // An operation was handed to the kernel or the pool.
  static void started(File& file) { ++file.in_flight; }

  // A transfer at the current position, counted in flight from here (a close waits for it): true
  // when the backend starts it now, false when it waits behind the one running.
  static bool queue_at_position(File& file, const PositionTransfer& transfer) {
    started(file);
    if (file.position_busy) {
      file.at_position.push_back(transfer);
      return false;
    }
    file.position_busy = true;
    return true;
  }

  // The running transfer at the current position completed, with any result (a failure or a
  // cancel must not stop the ones behind it): true with the one to start now in `next`.
  static bool next_at_position(File& file, PositionTransfer& next) {
    if (file.at_position.empty()) {
      file.position_busy = false;
      return false;
    }
    next = file.at_position.front();
    file.at_position.erase(file.at_position.begin());
    return true;
  }

  // A cancel of a transfer still waiting for its turn: true when it was queued and is now out of
  // the queue (copied to `withdrawn` if given), never started. The backend completes it with
  // -ECANCELED, and finished() as any other operation once it reports that.
  static bool withdraw_at_position(File& file, int32_t op_id, PositionTransfer* withdrawn = nullptr) {
    for (PositionTransfer* it = file.at_position.begin(); it != file.at_position.end(); ++it) {
      if (it->op_id != op_id) continue;
      if (withdrawn != nullptr) *withdrawn = *it;
      file.at_position.erase(it);
      return true;
    }
    return false;
  }

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
