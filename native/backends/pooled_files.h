// Regular files for the readiness backends (epoll, kqueue) and threads: each operation runs on
// the thread pool and completes as an event collected by the backend's drain() — except a read
// that the page cache can serve whole, which Linux lets the loop thread do itself without risk of
// blocking (read_cached).
#pragma once

#include <memory>
#include <vector>

#include "../core/backend.h"
#include "../core/event_outbox.h"
#include "../core/file_table.h"
#include "posix_socket.h"
#include "threadpool.h"

namespace twinloop {

class PooledFiles {
 public:
  // `wake` must be safe to call from any thread; it makes the backend's poll_fd() readable.
  PooledFiles(void (*wake)(void* context), void* context) : wake_(wake), context_(context) {}
  ~PooledFiles();
  PooledFiles(const PooledFiles&) = delete;
  PooledFiles& operator=(const PooledFiles&) = delete;

  void set_threads(int threads) { threads_ = threads; }

  int open(const std::string& path, const FileOpenOptions& options, int32_t op_id);
  int read(HandleId file, std::span<uint8_t> buffer, int64_t position, int32_t op_id);
  // Reads `buffer` whole from the page cache at once, on the calling thread, where the OS can
  // promise not to block (preadv2 with RWF_NOWAIT). Returns the bytes read, or -EAGAIN when the
  // read has to go to the pool: pages not cached, a short read (the end of the file, or part
  // cached), O_DIRECT, the file's current position, a large read, or no RWF_NOWAIT on this OS.
  int read_cached(HandleId file, std::span<uint8_t> buffer, int64_t position);
  int write(HandleId file, std::span<const uint8_t> buffer, int64_t position, int32_t op_id);
  int sync(HandleId file, bool data_only, int32_t op_id);
  int close(HandleId file, int32_t op_id);
  // Cancels operation `op_id` of `file` (-1: an open): one waiting for its turn at the file's
  // current position at once, else on the pool (see ThreadPool::cancel). A read that
  // read_cached() served is already done (-ENOENT): it completes with its bytes.
  int cancel(HandleId file, int32_t op_id);

  // Hands the jobs submitted since the last flush to the workers.
  void flush() {
    if (pool_) pool_->flush();
  }

  // Appends the completions of every finished job to `out`.
  void collect(std::vector<Event>& out);

  // Syscalls made on the loop thread's behalf by the workers.
  uint64_t syscalls() const { return syscalls_; }

 private:
  using Files = FileTable<UniqueFd>;

  int submit(HandleId file, FileJob job);
  void start(HandleId file, Files::File& open_file, FileJob job);
  void start_next_at_position(HandleId file);
  void start_close(HandleId file, Files::File& open_file);
  ThreadPool& pool();

  void (*wake_)(void*);
  void* context_;
  int threads_ = 4;  // libuv's default for Node's fs
  // False once preadv2 said this kernel has no RWF_NOWAIT; unused where the OS has none.
  [[maybe_unused]] bool cached_reads_ = true;
  Files files_;
  std::vector<FileJob> finished_;
  std::vector<Event> withdrawn_;  // cancelled while waiting at the position: reported by collect()
  uint64_t syscalls_ = 0;
  std::unique_ptr<ThreadPool> pool_;  // last: its threads stop before the files above close
};

// The Backend file methods of a backend whose files run on PooledFiles (readiness, threads),
// written once: each forwards to the backend's `files_`, and a read the page cache serves whole
// completes at once through its `outbox_`, without a trip through the pool. The backend owns
// both (it declares this class a friend) because its pool has to stop before its own wake
// descriptors close, which a base class's member could not promise.
template <typename Owner>
class PooledFileOperations : public Backend {
 public:
  int file_open(const std::string& path, const FileOpenOptions& options, int32_t op_id) override {
    return files().open(path, options, op_id);
  }
  int file_read(HandleId file, std::span<uint8_t> buffer, int64_t position, int32_t op_id) override {
    int n = files().read_cached(file, buffer, position);
    if (n == kEAGAIN) return files().read(file, buffer, position, op_id);
    owner().outbox_.post({file, EventKind::kCompleted, n, op_id});
    return 0;
  }
  int file_write(HandleId file, std::span<const uint8_t> buffer, int64_t position, int32_t op_id) override {
    return files().write(file, buffer, position, op_id);
  }
  int file_sync(HandleId file, bool data_only, int32_t op_id) override { return files().sync(file, data_only, op_id); }
  int file_close(HandleId file, int32_t op_id) override { return files().close(file, op_id); }
  int file_cancel(HandleId file, int32_t op_id) override { return files().cancel(file, op_id); }
  void set_thread_pool_size(int threads) override { files().set_threads(threads); }

 protected:
  // In drain(): the completions the pool finished since the last one, into the outbox.
  void post_finished_files() {
    finished_.clear();
    files().collect(finished_);
    for (const Event& event : finished_) owner().outbox_.post(event);
  }

 private:
  Owner& owner() { return static_cast<Owner&>(*this); }
  PooledFiles& files() { return owner().files_; }

  std::vector<Event> finished_;
};

}  // namespace twinloop
