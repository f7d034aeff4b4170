#include "iocp_files.h"

#include "../core/byte_pool.h"

#include <algorithm>
#include <cstring>
#include <utility>

namespace twinloop::iocp {

namespace {

// WriteFile at this offset writes at the end of the file (FILE_WRITE_TO_END_OF_FILE).
constexpr uint64_t kEndOfFile = ~uint64_t{0};
constexpr unsigned kOwnerWrite = 0200;

bool to_utf16(const std::string& text, std::wstring& out) {
  if (text.empty()) return false;
  int length = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, text.data(), static_cast<int>(text.size()), nullptr, 0);
  if (length <= 0) return false;
  out.resize(static_cast<size_t>(length));
  return MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, text.data(), static_cast<int>(text.size()), out.data(), length) == length;
}

// A transfer's failure as node:fs reports it: a handle without the access for it (a write on a
// file opened 'r') is ERROR_ACCESS_DENIED, which libuv's fs__read/fs__write make EBADF, as
// read(2)/write(2) say; the end of the file is a count of 0.
int transfer_error(DWORD error) {
  if (error == ERROR_HANDLE_EOF) return 0;
  return error == ERROR_ACCESS_DENIED ? kEBADF : translate_system_error(error);
}

// The result of an overlapped transfer the kernel completed: the NTSTATUS in Internal becomes a
// Win32 error through GetOverlappedResult, which also says the operation is over (bWait FALSE).
int transfer_result(HANDLE handle, OVERLAPPED* overlapped, DWORD bytes) {
  if (static_cast<LONG>(overlapped->Internal) >= 0) return static_cast<int>(std::min<size_t>(bytes, kMaxTransfer));  // NT_SUCCESS
  DWORD transferred = 0;
  if (GetOverlappedResult(handle, overlapped, &transferred, FALSE)) return static_cast<int>(transferred);
  return transfer_error(GetLastError());
}

}  // namespace

IocpFiles::~IocpFiles() {
  // Handles the table still holds are closed by its UniqueHandles. An operation the kernel never
  // gave back is leaked on purpose (its memory may still be written), as in IocpBackend.
}

IocpFiles::Operation* IocpFiles::acquire(Kind kind, HandleId file, int32_t op_id) {
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
  op->work_items.reset();
  op->slot = kUntracked;
  return op;
}

void IocpFiles::release(Operation* op) {
  op->path.clear();
  op->work_items.reset();
  operations_.release(op);
}

int IocpFiles::open(const std::string& path, const FileOpenOptions& options, int32_t op_id) {
  std::wstring wide;
  if (!to_utf16(path, wide)) return kEINVAL;
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
  if (options.create && !(static_cast<unsigned>(options.mode) & kOwnerWrite)) attributes |= FILE_ATTRIBUTE_READONLY;
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

int IocpFiles::read(HandleId file, std::span<uint8_t> buffer, int64_t position, int32_t op_id) {
  return transfer(file, false, buffer, position, op_id);
}

int IocpFiles::write(HandleId file, std::span<const uint8_t> buffer, int64_t position, int32_t op_id) {
  // The kernel only reads from it; one submission path serves both directions.
  return transfer(file, true, {const_cast<uint8_t*>(buffer.data()), buffer.size()}, position, op_id);
}

int IocpFiles::transfer(HandleId id, bool write, std::span<uint8_t> buffer, int64_t position, int32_t op_id) {
  File* file = files_.usable(id);
  if (!file) return kEBADF;
  PositionTransfer next{buffer.first(std::min(buffer.size(), kMaxTransfer)), op_id, write};
  OpenFile& open_file = file->descriptor;
  if (position >= 0) {
    files_.started(*file);
    start_transfer(id, open_file, next, position, false);
  } else if (files_.queue_at_position(*file, next)) {
    start_transfer(id, open_file, next, open_file.position, true);
  }
  return 0;
}

void IocpFiles::start_transfer(HandleId id, OpenFile& file, const PositionTransfer& transfer, int64_t position, bool sequential) {
  Operation* op = acquire(transfer.write ? Kind::kWrite : Kind::kRead, id, transfer.op_id);
  op->sequential = sequential;
  if (file.directory) {
    post_result(op, kEISDIR);
    return;
  }
  uint64_t offset = transfer.write && file.append ? kEndOfFile : static_cast<uint64_t>(position);
  op->overlapped.Offset = static_cast<DWORD>(offset);
  op->overlapped.OffsetHigh = static_cast<DWORD>(offset >> 32);
  auto length = static_cast<DWORD>(transfer.buffer.size());
  ++syscalls_;
  BOOL ok = transfer.write ? WriteFile(file.handle.get(), transfer.buffer.data(), length, nullptr, &op->overlapped)
                           : ReadFile(file.handle.get(), transfer.buffer.data(), length, nullptr, &op->overlapped);
  DWORD error = ok ? ERROR_SUCCESS : GetLastError();
  // Either way the kernel completes it through the port (no FILE_SKIP_COMPLETION_PORT_ON_SUCCESS).
  if (ok || error == ERROR_IO_PENDING) {
    track_transfer(op);
    return;
  }
  // Failed at once: no packet will come from the kernel, so one is posted (a read at or past the
  // end of the file fails this way on a cached file: that is a count of 0, not an error).
  post_result(op, transfer_error(error));
}

int IocpFiles::sync(HandleId id, int32_t op_id) {
  File* file = files_.usable(id);
  if (!file) return kEBADF;
  // FlushFileBuffers may wait without end (a pipe waits for its reader): on a handle of its own,
  // a flush that outlives the loop flushes and closes only that, never a handle value reused since.
  HANDLE duplicate = nullptr;
  ++syscalls_;
  if (!DuplicateHandle(GetCurrentProcess(), file->descriptor.handle.get(), GetCurrentProcess(), &duplicate, 0, FALSE, DUPLICATE_SAME_ACCESS)) {
    return translate_system_error(GetLastError());
  }
  files_.started(*file);
  Operation* op = acquire(Kind::kSync, id, op_id);
  op->handle = duplicate;
  start_work(op);
  return 0;
}

int IocpFiles::close(HandleId id, int32_t op_id) {
  // Closing under a transfer in flight would cancel it; the contract (and io_uring) lets it finish.
  bool close_now = false;
  if (int rc = files_.request_close(id, op_id, close_now); rc < 0) return rc;
  if (close_now) start_close(id, *files_.find(id));
  return 0;
}

int IocpFiles::cancel(HandleId id, int32_t op_id) {
  if (Operation* op = find_transfer(id, op_id); op != nullptr) {
    ++syscalls_;
    // ERROR_NOT_FOUND: the kernel finished it; its packet, with the result, is on its way.
    if (File* file = files_.find(id)) CancelIoEx(file->descriptor.handle.get(), &op->overlapped);
    return 0;
  }
  PositionTransfer withdrawn;
  if (File* file = files_.find(id); file != nullptr && files_.withdraw_at_position(*file, op_id, &withdrawn)) {
    Operation* op = acquire(withdrawn.write ? Kind::kWrite : Kind::kRead, id, op_id);
    post_result(op, kECANCELED);  // still counted in in_flight: complete() settles it
    return 0;
  }
  for (Operation* op : working_ops_) {
    if (op->op_id == op_id && op->file == id && op->kind != Kind::kClose) return 0;
  }
  return kENOENT;
}

void IocpFiles::start_close(HandleId id, File& file) {
  Operation* op = acquire(Kind::kClose, id, file.close_op);
  op->handle = file.descriptor.release();  // the work item closes it, whatever becomes of the loop
  files_.started(file);
  start_work(op);
}

void IocpFiles::start_work(Operation* op) {
  track_work(op);
  op->work_items = work_items_;
  ++syscalls_;
  if (!TrySubmitThreadpoolCallback(run_work, op, nullptr)) post_result(op, translate_system_error(GetLastError()));
}

void IocpFiles::post_result(Operation* op, int result) {
  op->posted = true;
  op->result = result;
  PostQueuedCompletionStatus(port_, 0, to_key(CompletionKey::kFile), &op->overlapped);
}

// A thread of the system pool. It owns `op` until the packet is posted, and touches nothing else:
// the backend may be tearing down, or gone (finish_work).
void CALLBACK IocpFiles::run_work(PTP_CALLBACK_INSTANCE /*instance*/, void* context) {
  auto* op = static_cast<Operation*>(context);
  switch (op->kind) {
    case Kind::kOpen:
      run_open(op);
      break;
    case Kind::kSync:
      // FlushFileBuffers is fsync and fdatasync both: Windows has no data-only flush before
      // NtFlushBuffersFileEx, which MinGW does not declare.
      op->result = FlushFileBuffers(op->handle) ? 0 : translate_system_error(GetLastError());
      CloseHandle(op->handle);  // the duplicate sync() made
      op->handle = nullptr;
      break;
    case Kind::kClose:
      op->result = CloseHandle(op->handle) ? 0 : translate_system_error(GetLastError());
      break;
    default:
      break;
  }
  finish_work(op);
}

// Posts the result, unless teardown gave up on this work item: then nobody will dequeue it (and
// the port may be closed), so the work item disposes of what it holds and of `op` itself.
void IocpFiles::finish_work(Operation* op) {
  std::shared_ptr<WorkItems> items = op->work_items;  // `op` may go below; the lock may not
  LockGuard guard(items->lock);
  if (!items->abandoned) {
    op->posted = true;
    PostQueuedCompletionStatus(op->port, 0, to_key(CompletionKey::kFile), &op->overlapped);
    return;
  }
  if (op->kind == Kind::kOpen && op->result == 0) CloseHandle(op->handle);
  delete op;  // its pool never gets it back: teardown counted it abandoned
}

void IocpFiles::run_open(Operation* op) {
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
  op->handle = handle;
  op->result = 0;
}

namespace {
size_t slot_of(int32_t op_id) { return static_cast<uint32_t>(op_id) & ((1u << kHandleSlotBits) - 1); }
}  // namespace

void IocpFiles::track_transfer(Operation* op) {
  size_t slot = slot_of(op->op_id);
  if (slot >= transfers_.size()) transfers_.resize(slot + 1, nullptr);
  transfers_[slot] = op;
}

IocpFiles::Operation* IocpFiles::find_transfer(HandleId file, int32_t op_id) const {
  size_t slot = slot_of(op_id);
  Operation* op = slot < transfers_.size() ? transfers_[slot] : nullptr;
  return op != nullptr && op->op_id == op_id && op->file == file ? op : nullptr;
}

void IocpFiles::track_work(Operation* op) {
  op->slot = working_ops_.size();
  working_ops_.push_back(op);
}

void IocpFiles::forget(Operation* op) {
  if (op->kind == Kind::kRead || op->kind == Kind::kWrite) {
    size_t slot = slot_of(op->op_id);
    if (slot < transfers_.size() && transfers_[slot] == op) transfers_[slot] = nullptr;
    return;
  }
  if (op->slot >= working_ops_.size() || working_ops_[op->slot] != op) return;
  working_ops_[op->slot] = working_ops_.back();
  working_ops_[op->slot]->slot = op->slot;
  working_ops_.pop_back();
  op->slot = kUntracked;
}

Event IocpFiles::complete(const OVERLAPPED_ENTRY& entry) {
  auto* op = reinterpret_cast<Operation*>(entry.lpOverlapped);
  forget(op);
  HandleId id = op->file;
  int32_t op_id = op->op_id;
  File* file = files_.find(id);
  int result;
  if (op->posted) {
    result = op->result;
  } else {
    result = transfer_result(file->descriptor.handle.get(), &op->overlapped, entry.dwNumberOfBytesTransferred);
  }
  switch (op->kind) {
    case Kind::kOpen: {
      // Tied to the port here, where the port is certainly open, not on the pool's thread. A
      // directory takes no transfer (they are EISDIR before any call): it needs no port.
      if (result == 0 && !op->directory) {
        ++syscalls_;
        if (CreateIoCompletionPort(op->handle, port_, to_key(CompletionKey::kFile), 0) == nullptr) {
          result = translate_system_error(GetLastError());
          CloseHandle(op->handle);
        }
      }
      if (result == 0) {
        OpenFile opened;
        opened.handle = UniqueHandle(op->handle);
        opened.directory = op->directory;
        opened.append = op->append;
        result = files_.insert(std::move(opened));  // EMFILE closes the handle
      }
      release(op);
      return {-1, EventKind::kCompleted, result, op_id};
    }
    case Kind::kClose:
      files_.finished(id, true);  // its handle went to the work item, which closed it
      release(op);
      return {id, EventKind::kCompleted, result, op_id};
    case Kind::kSync:
      break;
    case Kind::kRead:
    case Kind::kWrite:
      if (op->sequential) {
        OpenFile& open_file = file->descriptor;
        if (result > 0 && !(op->kind == Kind::kWrite && open_file.append)) open_file.position += result;
        PositionTransfer next;
        if (files_.next_at_position(*file, next)) start_transfer(id, open_file, next, open_file.position, true);
      }
      break;
  }
  release(op);
  if (File* to_close = files_.finished(id, false)) start_close(id, *to_close);
  return {id, EventKind::kCompleted, result, op_id};
}

void IocpFiles::cancel_all() {
  files_.for_each([](HandleId, File& file) {
    const OpenFile& open_file = file.descriptor;
    if (!open_file.directory && open_file.handle.get() != nullptr) CancelIoEx(open_file.handle.get(), nullptr);
  });
}

void IocpFiles::abandon_work() {
  LockGuard guard(work_items_->lock);
  work_items_->abandoned = true;
}

void IocpFiles::discard(OVERLAPPED* overlapped) {
  auto* op = reinterpret_cast<Operation*>(overlapped);
  forget(op);
  if (op->kind == Kind::kOpen && op->result == 0 && op->handle != nullptr) CloseHandle(op->handle);
  release(op);
}

}  // namespace twinloop::iocp
