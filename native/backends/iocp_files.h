// Regular files on IOCP: overlapped ReadFile/WriteFile on handles tied to the loop's completion
// port, so that a file operation completes exactly like a socket one. Each operation has its own
// FileOperation (a file may have any number in flight, as on io_uring); its packets carry the
// completion key kFileKey, which tells them from the socket operations.
//
// What Windows can only do blocking — CreateFileW (a network path takes seconds), FlushFileBuffers
// (waits for the device), CloseHandle (flushes a network file) — runs on the system thread pool
// (TrySubmitThreadpoolCallback), not on the waiting thread: that thread must keep dequeuing socket
// completions and timers while a flush waits for a disk. The work item posts its result to the
// port as a packet of its own, and an overlapped call that fails at once does the same, so every
// file operation, whatever happens to it, completes through the port — one path, as for sockets.
//
// Position -1 is the file's current position, as Node's FileHandle keeps it on Windows: this
// keeps one per file, advanced by each completed transfer. Those transfers run one at a time in
// submission order (the next waits for the previous one's count), as read(2) calls would; positioned
// transfers run in parallel. A file opened for appending writes every byte at its end
// (Offset = OffsetHigh = 0xFFFFFFFF, what FILE_APPEND_DATA access means), as O_APPEND does.
#pragma once

#include <winsock2.h>
#include <windows.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "../core/backend.h"
#include "../core/handle_table.h"
#include "iocp_socket.h"

namespace twinloop::iocp {

class IocpFiles {
 public:
  // The completion key of every file packet; the socket operations use 0.
  static constexpr ULONG_PTR kFileKey = 3;

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

  // Turns a dequeued file packet into the event to report.
  Event complete(const OVERLAPPED_ENTRY& entry);
  // Teardown: cancels every transfer in flight, so that its packet comes now.
  void cancel_all();
  // Teardown: a dequeued packet, released without an event (an opened handle is closed).
  void discard(OVERLAPPED* overlapped);
  // Operations whose packet has not been dequeued yet; `working` those on the thread pool, which
  // always finish and must be waited for (the work item posts to the port).
  size_t in_flight() const { return operations_.in_flight(); }
  size_t working() const { return working_; }

  uint64_t syscalls() const { return syscalls_; }

 private:
  enum class Kind : uint8_t { kOpen, kRead, kWrite, kSync, kClose };

  struct Operation {
    OVERLAPPED overlapped;  // first: a packet's OVERLAPPED* is the Operation*
    Kind kind = Kind::kOpen;
    bool sequential = false;  // position -1: advances the file position when it completes
    bool posted = false;      // `result` was set by us (a work item, or a call that failed at once)
    HandleId file = -1;
    int32_t op_id = -1;
    int result = 0;
    HANDLE port = nullptr;    // for the work item
    HANDLE handle = nullptr;  // kOpen: the new handle (work item); kSync/kClose: the file's
    std::wstring path;        // kOpen
    DWORD access = 0, disposition = 0, attributes = 0;
    bool want_write = false;  // kOpen: a directory cannot be opened for writing (EISDIR)
    bool directory = false;   // kOpen: what was opened is a directory
    bool append = false;      // kOpen
  };
  static_assert(offsetof(Operation, overlapped) == 0, "packets are mapped back by address");

  struct Transfer {
    bool write;
    std::span<uint8_t> buffer;
    int32_t op_id;
  };

  struct File {
    UniqueHandle handle{nullptr};
    bool directory = false;
    bool append = false;
    int in_flight = 0;
    int32_t close_op = -1;  // >= 0: close once in_flight drops to 0
    int64_t position = 0;   // for position -1
    bool sequential_busy = false;     // a position -1 transfer is in flight
    std::vector<Transfer> sequential;  // position -1 transfers waiting for it, in order
  };

  int transfer(HandleId file, bool write, std::span<uint8_t> buffer, int64_t position, int32_t op_id);
  void start_transfer(HandleId id, File& file, const Transfer& transfer, int64_t position, bool sequential);
  void start_close(HandleId id, File& file);
  void start_work(Operation* op);
  void post_result(Operation* op, int result);
  static void CALLBACK run_work(PTP_CALLBACK_INSTANCE instance, void* context);
  static void run_open(Operation* op);

  Operation* acquire(Kind kind, HandleId file, int32_t op_id);
  void release(Operation* op);

  HANDLE port_;
  HandleTable<File> files_;
  iocp::OperationPool<Operation> operations_;
  size_t working_ = 0;
  uint64_t syscalls_ = 0;
};

// Header-only, as io_uring_files.h is: the build files list one source per backend.

namespace files_detail {

// Results travel as int32: one call moves at most 1 GiB, as with sockets.
inline constexpr size_t kMaxTransfer = size_t{1} << 30;
// WriteFile at this offset writes at the end of the file (FILE_WRITE_TO_END_OF_FILE).
inline constexpr uint64_t kEndOfFile = ~uint64_t{0};
inline constexpr unsigned kOwnerWrite = 0200;

inline bool to_utf16(const std::string& text, std::wstring& out) {
  if (text.empty()) return false;
  int length = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, text.data(), static_cast<int>(text.size()), nullptr, 0);
  if (length <= 0) return false;
  out.resize(static_cast<size_t>(length));
  return MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, text.data(), static_cast<int>(text.size()), out.data(), length) == length;
}

// The result of an overlapped transfer the kernel completed: the NTSTATUS in Internal becomes a
// Win32 error through GetOverlappedResult, which also says the operation is over (bWait FALSE).
inline int transfer_result(HANDLE handle, OVERLAPPED* overlapped, DWORD bytes) {
  if (static_cast<LONG>(overlapped->Internal) >= 0) return static_cast<int>(std::min<size_t>(bytes, kMaxTransfer));  // NT_SUCCESS
  DWORD transferred = 0;
  if (GetOverlappedResult(handle, overlapped, &transferred, FALSE)) return static_cast<int>(transferred);
  DWORD error = GetLastError();
  return error == ERROR_HANDLE_EOF ? 0 : translate_system_error(error);
}

}  // namespace files_detail

inline IocpFiles::~IocpFiles() {
  // Handles the table still holds are closed by its UniqueHandles. An operation the kernel never
  // gave back is leaked on purpose (its memory may still be written), as in IocpBackend.
}

inline IocpFiles::Operation* IocpFiles::acquire(Kind kind, HandleId file, int32_t op_id) {
  Operation* op = operations_.acquire();
  op->kind = kind;
  op->sequential = false;
  op->posted = false;
  op->file = file;
  op->op_id = op_id;
  op->result = 0;
  op->port = port_;
  op->handle = nullptr;
  op->directory = false;
  return op;
}

inline void IocpFiles::release(Operation* op) {
  op->path.clear();
  operations_.release(op);
}

inline int IocpFiles::open(const std::string& path, const FileOpenOptions& options, int32_t op_id) {
  std::wstring wide;
  if (!files_detail::to_utf16(path, wide)) return kEINVAL;
  // libuv's fs__open: the same access rights, share modes and dispositions as Node's fs.open.
  DWORD access = options.read && options.write ? FILE_GENERIC_READ | FILE_GENERIC_WRITE
                 : options.write                ? FILE_GENERIC_WRITE
                                                : FILE_GENERIC_READ;
  if (options.append) access = (access & ~static_cast<DWORD>(FILE_WRITE_DATA)) | FILE_APPEND_DATA;
  DWORD disposition;
  if (options.create && options.exclusive) {
    disposition = CREATE_NEW;
  } else if (options.create) {
    disposition = options.truncate ? CREATE_ALWAYS : OPEN_ALWAYS;
  } else {
    disposition = options.truncate ? TRUNCATE_EXISTING : OPEN_EXISTING;
  }
  // BACKUP_SEMANTICS opens directories too (as open(2) does, for reading): a read of one is then
  // EISDIR, as on Linux, rather than the open failing with EACCES.
  DWORD attributes = FILE_ATTRIBUTE_NORMAL | FILE_FLAG_OVERLAPPED | FILE_FLAG_BACKUP_SEMANTICS;
  if (options.direct) attributes |= FILE_FLAG_NO_BUFFERING;
  if (options.create && !(static_cast<unsigned>(options.mode) & files_detail::kOwnerWrite)) attributes |= FILE_ATTRIBUTE_READONLY;
  Operation* op = acquire(Kind::kOpen, -1, op_id);
  op->path = std::move(wide);
  op->access = access;
  op->disposition = disposition;
  op->attributes = attributes;
  op->want_write = options.write;
  op->append = options.append;
  start_work(op);
  return 0;
}

inline int IocpFiles::read(HandleId file, std::span<uint8_t> buffer, int64_t position, int32_t op_id) {
  return transfer(file, false, buffer, position, op_id);
}

inline int IocpFiles::write(HandleId file, std::span<const uint8_t> buffer, int64_t position, int32_t op_id) {
  // The kernel only reads from it; one submission path serves both directions.
  return transfer(file, true, {const_cast<uint8_t*>(buffer.data()), buffer.size()}, position, op_id);
}

inline int IocpFiles::transfer(HandleId id, bool write, std::span<uint8_t> buffer, int64_t position, int32_t op_id) {
  File* file = files_.find(id);
  if (!file || file->close_op >= 0) return kEBADF;
  Transfer next{write, buffer.first(std::min(buffer.size(), files_detail::kMaxTransfer)), op_id};
  ++file->in_flight;  // queued or posted: close waits for it either way
  if (position >= 0) {
    start_transfer(id, *file, next, position, false);
  } else if (file->sequential_busy) {
    file->sequential.push_back(next);
  } else {
    file->sequential_busy = true;
    start_transfer(id, *file, next, file->position, true);
  }
  return 0;
}

inline void IocpFiles::start_transfer(HandleId id, File& file, const Transfer& transfer, int64_t position, bool sequential) {
  Operation* op = acquire(transfer.write ? Kind::kWrite : Kind::kRead, id, transfer.op_id);
  op->sequential = sequential;
  if (file.directory) {
    post_result(op, kEISDIR);
    return;
  }
  uint64_t offset = transfer.write && file.append ? files_detail::kEndOfFile : static_cast<uint64_t>(position);
  op->overlapped.Offset = static_cast<DWORD>(offset);
  op->overlapped.OffsetHigh = static_cast<DWORD>(offset >> 32);
  auto length = static_cast<DWORD>(transfer.buffer.size());
  ++syscalls_;
  BOOL ok = transfer.write ? WriteFile(file.handle.get(), transfer.buffer.data(), length, nullptr, &op->overlapped)
                           : ReadFile(file.handle.get(), transfer.buffer.data(), length, nullptr, &op->overlapped);
  if (ok) return;  // completes through the port all the same (no FILE_SKIP_COMPLETION_PORT_ON_SUCCESS)
  DWORD error = GetLastError();
  if (error == ERROR_IO_PENDING) return;
  // Failed at once: no packet will come from the kernel, so one is posted (a read at or past the
  // end of the file fails this way on a cached file: that is a count of 0, not an error).
  post_result(op, error == ERROR_HANDLE_EOF ? 0 : translate_system_error(error));
}

inline int IocpFiles::sync(HandleId id, int32_t op_id) {
  File* file = files_.find(id);
  if (!file || file->close_op >= 0) return kEBADF;
  ++file->in_flight;
  Operation* op = acquire(Kind::kSync, id, op_id);
  op->handle = file->handle.get();
  start_work(op);
  return 0;
}

inline int IocpFiles::close(HandleId id, int32_t op_id) {
  File* file = files_.find(id);
  if (!file || file->close_op >= 0) return kEBADF;
  file->close_op = op_id;
  // Closing under a transfer in flight would cancel it; the contract (and io_uring) lets it finish.
  if (file->in_flight == 0) start_close(id, *file);
  return 0;
}

inline void IocpFiles::start_close(HandleId id, File& file) {
  Operation* op = acquire(Kind::kClose, id, file.close_op);
  op->handle = file.handle.get();
  start_work(op);
}

inline void IocpFiles::start_work(Operation* op) {
  ++working_;
  ++syscalls_;
  if (!TrySubmitThreadpoolCallback(run_work, op, nullptr)) post_result(op, translate_system_error(GetLastError()));
}

inline void IocpFiles::post_result(Operation* op, int result) {
  op->posted = true;
  op->result = result;
  PostQueuedCompletionStatus(port_, 0, kFileKey, &op->overlapped);
}

// A thread of the system pool. It owns `op` until the packet is posted, and touches nothing else:
// the backend may be tearing down, waiting for exactly this packet.
inline void CALLBACK IocpFiles::run_work(PTP_CALLBACK_INSTANCE /*instance*/, void* context) {
  auto* op = static_cast<Operation*>(context);
  switch (op->kind) {
    case Kind::kOpen:
      run_open(op);
      break;
    case Kind::kSync:
      // FlushFileBuffers is fsync and fdatasync both: Windows has no data-only flush before
      // NtFlushBuffersFileEx, which MinGW does not declare.
      op->result = FlushFileBuffers(op->handle) ? 0 : translate_system_error(GetLastError());
      break;
    case Kind::kClose:
      op->result = CloseHandle(op->handle) ? 0 : translate_system_error(GetLastError());
      break;
    default:
      break;
  }
  op->posted = true;
  PostQueuedCompletionStatus(op->port, 0, kFileKey, &op->overlapped);
}

inline void IocpFiles::run_open(Operation* op) {
  HANDLE handle = CreateFileW(op->path.c_str(), op->access, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, nullptr,
                              op->disposition, op->attributes, nullptr);
  if (handle == INVALID_HANDLE_VALUE) {
    DWORD error = GetLastError();
    DWORD found = GetFileAttributesW(op->path.c_str());
    bool directory = found != INVALID_FILE_ATTRIBUTES && (found & FILE_ATTRIBUTE_DIRECTORY);
    // A directory refuses write access (EACCES) and, with OPEN_ALWAYS, says it exists; open(2)
    // says EISDIR for both, and so does libuv.
    op->result = directory && op->want_write ? kEISDIR : translate_system_error(error);
    return;
  }
  BY_HANDLE_FILE_INFORMATION info;
  op->directory = GetFileInformationByHandle(handle, &info) && (info.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY);
  if (op->directory && op->want_write) {
    CloseHandle(handle);
    op->result = kEISDIR;
    return;
  }
  // A directory takes no transfer (they are EISDIR before any call): it needs no port.
  if (!op->directory && CreateIoCompletionPort(handle, op->port, kFileKey, 0) == nullptr) {
    op->result = translate_system_error(GetLastError());
    CloseHandle(handle);
    return;
  }
  op->handle = handle;
  op->result = 0;
}

inline Event IocpFiles::complete(const OVERLAPPED_ENTRY& entry) {
  auto* op = reinterpret_cast<Operation*>(entry.lpOverlapped);
  HandleId id = op->file;
  int32_t op_id = op->op_id;
  File* file = files_.find(id);
  int result;
  if (op->posted) {
    result = op->result;
  } else {
    result = files_detail::transfer_result(file->handle.get(), &op->overlapped, entry.dwNumberOfBytesTransferred);
  }
  switch (op->kind) {
    case Kind::kOpen: {
      --working_;
      if (result == 0) {
        File opened;
        opened.handle = UniqueHandle(op->handle);
        opened.directory = op->directory;
        opened.append = op->append;
        result = files_.insert(std::move(opened));
        if (result < 0) result = kEMFILE;  // the handle closed with the File that was dropped
      }
      release(op);
      return {-1, EventKind::kCompleted, result, op_id};
    }
    case Kind::kClose:
      --working_;
      (void)file->handle.release();  // the work item closed it
      files_.erase(id);
      release(op);
      return {id, EventKind::kCompleted, result, op_id};
    case Kind::kSync:
      --working_;
      break;
    case Kind::kRead:
    case Kind::kWrite:
      if (op->sequential) {
        if (result > 0 && !(op->kind == Kind::kWrite && file->append)) file->position += result;
        file->sequential_busy = false;
        if (!file->sequential.empty()) {
          Transfer next = file->sequential.front();
          file->sequential.erase(file->sequential.begin());
          file->sequential_busy = true;
          start_transfer(id, *file, next, file->position, true);
          file = files_.find(id);
        }
      }
      break;
  }
  release(op);
  if (--file->in_flight == 0 && file->close_op >= 0) start_close(id, *file);
  return {id, EventKind::kCompleted, result, op_id};
}

inline void IocpFiles::cancel_all() {
  files_.for_each([](HandleId, File& file) {
    if (!file.directory) CancelIoEx(file.handle.get(), nullptr);
  });
}

inline void IocpFiles::discard(OVERLAPPED* overlapped) {
  auto* op = reinterpret_cast<Operation*>(overlapped);
  if (op->kind == Kind::kOpen || op->kind == Kind::kSync || op->kind == Kind::kClose) --working_;
  if (op->kind == Kind::kOpen && op->result == 0 && op->handle != nullptr) CloseHandle(op->handle);
  if (op->kind == Kind::kClose) {
    if (File* file = files_.find(op->file)) (void)file->handle.release();
  }
  release(op);
}

}  // namespace twinloop::iocp
