// Regular files on IOCP: overlapped ReadFile/WriteFile on handles tied to the loop's completion
// port, so that a file operation completes exactly like a socket one. Each operation has its own
// FileOperation (a file may have any number in flight, as on io_uring); its packets carry the
// completion key CompletionKey::kFile, which tells them from the socket operations.
//
// What Windows can only do blocking — CreateFileW (a network path takes seconds), FlushFileBuffers
// (waits for the device), CloseHandle (flushes a network file) — runs on the system thread pool
// (TrySubmitThreadpoolCallback), not on the waiting thread: that thread must keep dequeuing socket
// completions and timers while a flush waits for a disk. The work item posts its result to the
// port as a packet of its own, and an overlapped call that fails at once does the same, so every
// file operation, whatever happens to it, completes through the port — one path, as for sockets —
// until teardown, which waits for work items only so long (abandon_work).
//
// Position -1 is the file's current position, as Node's FileHandle keeps it on Windows: this
// keeps one per file, advanced by each completed transfer. Those transfers run one at a time in
// submission order (core's FileTable queues them: the next waits for the previous one's count), as
// read(2) calls would; positioned transfers run in parallel. A file opened for appending writes
// every byte at its end (Offset = OffsetHigh = 0xFFFFFFFF, what FILE_APPEND_DATA access means), as
// O_APPEND does.
#pragma once

#include <winsock2.h>
#include <windows.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "../core/backend.h"
#include "../core/file_table.h"
#include "../core/handle_table.h"
#include "iocp_socket.h"

namespace twinloop::iocp {

class IocpFiles {
 public:
  explicit IocpFiles(HANDLE port) : port_(port) {}
  ~IocpFiles();
  IocpFiles(const IocpFiles&) = delete;
  IocpFiles& operator=(const IocpFiles&) = delete;

  // JavaScript thread. Each returns 0 (a packet follows) or a negative libuv error.
  int open(const std::string& path, const FileOpenOptions& options, int32_t op_id);
  int read(HandleId file, std::span<uint8_t> buffer, int64_t position, int32_t op_id);
  int write(HandleId file, std::span<const uint8_t> buffer, int64_t position, int32_t op_id);
  int sync(HandleId file, int32_t op_id);
  int close(HandleId file, int32_t op_id);
  // Cancels operation `op_id` of `file`: a transfer the kernel holds with CancelIoEx (its packet
  // then says ECANCELED, or its result if it finished first), one queued behind the file position
  // at once. An open or sync already on the system thread pool cannot be withdrawn (CreateFileW and
  // FlushFileBuffers take no OVERLAPPED): it completes with its result. -ENOENT: not in flight.
  int cancel(HandleId file, int32_t op_id);

  // Turns a dequeued file packet into the event to report.
  Event complete(const OVERLAPPED_ENTRY& entry);
  // Teardown: cancels every transfer in flight, so that its packet comes now.
  void cancel_all();
  // Teardown, when its bound has passed: a work item still running on the system thread pool
  // (CreateFileW or FlushFileBuffers cannot be interrupted) will not post to the port any more,
  // and disposes of its operation itself when it ends. What was posted before is in the port.
  void abandon_work();
  // Teardown: a dequeued packet, released without an event (an opened handle is closed).
  void discard(OVERLAPPED* overlapped);
  // Operations whose packet has not been dequeued yet (work items included).
  size_t in_flight() const { return operations_.in_flight(); }

  uint64_t syscalls() const { return syscalls_; }

 private:
  enum class Kind : uint8_t { kOpen, kRead, kWrite, kSync, kClose };
  static constexpr size_t kUntracked = SIZE_MAX;

  // Shared by the loop and its work items, and outlives both: whether teardown gave up on the
  // work items, decided under the lock a work item posts under, so that none posts to a port that
  // may be closed (and its handle value reused by another loop's port) once teardown has left.
  struct WorkItems {
    Lock lock;
    bool abandoned = false;
  };

  struct Operation {
    OVERLAPPED overlapped;  // first: a packet's OVERLAPPED* is the Operation*
    Kind kind = Kind::kOpen;
    bool sequential = false;  // position -1: advances the file position when it completes
    bool posted = false;      // `result` was set by us (a work item, or a call that failed at once)
    HandleId file = -1;
    int32_t op_id = -1;
    int result = 0;
    HANDLE port = nullptr;    // for the work item
    // The work item's own: kOpen the new handle, kSync a duplicate of the file's (so that the flush
    // needs nothing of the loop's, however long it waits), kClose the file's, taken from it.
    HANDLE handle = nullptr;
    std::shared_ptr<WorkItems> work_items;  // work items only
    std::wstring path;        // kOpen
    DWORD access = 0, disposition = 0, attributes = 0;
    bool want_write = false;  // kOpen: a directory cannot be opened for writing (EISDIR)
    bool directory = false;   // kOpen: what was opened is a directory
    bool append = false;      // kOpen
    size_t slot = kUntracked;  // work items: its index in working_ops_ (track_work)
  };
  static_assert(offsetof(Operation, overlapped) == 0, "packets are mapped back by address");

  // What FileTable keeps for a file beside its lifecycle: the handle, and the file position an
  // overlapped handle does not keep.
  struct OpenFile {
    UniqueHandle handle{nullptr};
    bool directory = false;
    bool append = false;
    int64_t position = 0;   // for position -1
    HANDLE release() { return handle.release(); }
  };
  using File = FileTable<OpenFile>::File;

  int transfer(HandleId file, bool write, std::span<uint8_t> buffer, int64_t position, int32_t op_id);
  void start_transfer(HandleId id, OpenFile& file, const PositionTransfer& transfer, int64_t position, bool sequential);
  void start_close(HandleId id, File& file);
  void start_work(Operation* op);
  void post_result(Operation* op, int result);
  static void CALLBACK run_work(PTP_CALLBACK_INSTANCE instance, void* context);
  static void run_open(Operation* op);
  static void finish_work(Operation* op);

  Operation* acquire(Kind kind, HandleId file, int32_t op_id);
  // The operations in flight, found and dropped in O(1): a scan of every one in flight at each
  // completion made N positioned reads cost O(N^2) (100 000 in flight: 7-13 s under wine, 0.3-0.9
  // s now), and one at each cancel made aborting 50 000 block controller.abort() for 7.1 s
  // (epoll: 29 ms). Transfers by their op_id's slot, which no other transfer in flight has (the
  // binding leases one buffer per slot); work items by their index in working_ops_.
  void track_transfer(Operation* op);
  Operation* find_transfer(HandleId file, int32_t op_id) const;
  void track_work(Operation* op);
  void forget(Operation* op);  // its packet was dequeued
  void release(Operation* op);

  HANDLE port_;
  FileTable<OpenFile> files_;
  std::vector<Operation*> transfers_;    // handed to ReadFile/WriteFile, packet not dequeued yet, by slot
  std::vector<Operation*> working_ops_;  // open, sync and close on the system thread pool
  std::shared_ptr<WorkItems> work_items_ = std::make_shared<WorkItems>();
  iocp::OperationPool<Operation> operations_;
  uint64_t syscalls_ = 0;
};

}  // namespace twinloop::iocp
