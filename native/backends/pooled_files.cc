#include "pooled_files.h"

#include "../core/byte_pool.h"

#include "posix_file.h"

#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace twinloop {

namespace {
#ifdef RWF_NOWAIT
// The largest read done on the loop thread: copying it costs a few microseconds; a larger one
// goes to the pool, where copying does not hold up the loop.
constexpr size_t kMaxCachedRead = size_t{64} << 10;
#endif
}  // namespace

PooledFiles::~PooledFiles() {
  if (!pool_) return;
  std::vector<FileJob> abandoned = pool_->stop();
  // What the workers finished but the loop never collected: an opened descriptor nobody owns yet,
  // or a descriptor a worker already closed, which the table must not close again. A close still
  // running on an abandoned worker counts as done. A transfer still running there keeps its
  // descriptor's file alive in the kernel on its own; the table closes its number.
  finished_.clear();
  pool_->take_finished(finished_);
  for (FileJob& job : abandoned) finished_.push_back(std::move(job));
  for (const FileJob& job : finished_) {
    if (job.kind == FileJob::Kind::kOpen && job.result >= 0) ::close(job.result);
    if (job.kind == FileJob::Kind::kClose) files_.forget(job.file);
  }
}

ThreadPool& PooledFiles::pool() {
  if (!pool_) pool_ = std::make_unique<ThreadPool>(threads_, wake_, context_);
  return *pool_;
}

int PooledFiles::open(const std::string& path, const FileOpenOptions& options, int32_t op_id) {
  FileJob job;
  job.kind = FileJob::Kind::kOpen;
  if (int rc = posix_open_flags(options, job.open_flags); rc < 0) return rc;
  job.op_id = op_id;
  job.path = path;
  job.mode = options.mode;
  pool().submit(std::move(job));
  return 0;
}

int PooledFiles::submit(HandleId file, FileJob job) {
  Files::File* open_file = files_.usable(file);
  if (!open_file) return kEBADF;
  bool transfer = job.kind == FileJob::Kind::kRead || job.kind == FileJob::Kind::kWrite;
  if (transfer && job.position < 0) {
    if (!Files::queue_at_position(*open_file, {job.buffer, job.op_id, job.kind == FileJob::Kind::kWrite})) return 0;
  } else {
    Files::started(*open_file);
  }
  start(file, *open_file, std::move(job));
  return 0;
}

void PooledFiles::start(HandleId file, Files::File& open_file, FileJob job) {
  job.fd = open_file.descriptor.get();
  job.file = file;
  pool().submit(std::move(job));
}

// Called before the completed transfer at the position is finished(): the file is still open.
void PooledFiles::start_next_at_position(HandleId file) {
  Files::File* open_file = files_.find(file);
  PositionTransfer next;
  if (open_file == nullptr || !Files::next_at_position(*open_file, next)) return;
  FileJob job;
  job.kind = next.write ? FileJob::Kind::kWrite : FileJob::Kind::kRead;
  job.op_id = next.op_id;
  job.buffer = next.buffer;
  job.position = -1;
  start(file, *open_file, std::move(job));
}

int PooledFiles::cancel(HandleId file, int32_t op_id) {
  if (Files::File* open_file = files_.find(file); open_file != nullptr && Files::withdraw_at_position(*open_file, op_id)) {
    withdrawn_.push_back({file, EventKind::kCompleted, kECANCELED, op_id});
    wake_(context_);  // the completion comes as an event, in the next drain
    return 0;
  }
  return pool_ ? pool_->cancel(file, op_id) : kENOENT;
}

int PooledFiles::read(HandleId file, std::span<uint8_t> buffer, int64_t position, int32_t op_id) {
  FileJob job;
  job.kind = FileJob::Kind::kRead;
  job.op_id = op_id;
  job.buffer = buffer.first(std::min(buffer.size(), kMaxTransfer));
  job.position = position;
  return submit(file, std::move(job));
}

int PooledFiles::read_cached(HandleId file, std::span<uint8_t> buffer, int64_t position) {
#ifdef RWF_NOWAIT
  Files::File* open_file = files_.usable(file);
  // The current position is left to the pool: a short read here would already have moved it.
  if (!cached_reads_ || !open_file || open_file->direct || position < 0 ||
      buffer.size() > kMaxCachedRead) {
    return kEAGAIN;
  }
  iovec target{buffer.data(), buffer.size()};
  ++syscalls_;
  ssize_t n = ::preadv2(open_file->descriptor.get(), &target, 1, position, RWF_NOWAIT);
  if (n == static_cast<ssize_t>(buffer.size())) return static_cast<int>(n);
  if (n < 0 && (errno == ENOSYS || errno == EOPNOTSUPP)) cached_reads_ = false;
  return kEAGAIN;
#else
  (void)file, (void)buffer, (void)position;
  return kEAGAIN;
#endif
}

int PooledFiles::write(HandleId file, std::span<const uint8_t> buffer, int64_t position, int32_t op_id) {
  FileJob job;
  job.kind = FileJob::Kind::kWrite;
  job.op_id = op_id;
  // The worker only reads from it; one job type serves both directions.
  job.buffer = {const_cast<uint8_t*>(buffer.data()), std::min(buffer.size(), kMaxTransfer)};
  job.position = position;
  return submit(file, std::move(job));
}

int PooledFiles::sync(HandleId file, bool data_only, int32_t op_id) {
  FileJob job;
  job.kind = data_only ? FileJob::Kind::kDataSync : FileJob::Kind::kSync;
  job.op_id = op_id;
  return submit(file, std::move(job));
}

int PooledFiles::close(HandleId file, int32_t op_id) {
  bool close_now = false;
  if (int rc = files_.request_close(file, op_id, close_now); rc < 0) return rc;
  if (close_now) start_close(file, *files_.find(file));
  return 0;
}

void PooledFiles::start_close(HandleId file, Files::File& open_file) {
  FileJob job;
  job.kind = FileJob::Kind::kClose;
  job.op_id = open_file.close_op;
  job.file = file;
  job.fd = open_file.descriptor.get();
  Files::started(open_file);
  pool().submit(std::move(job));
}

void PooledFiles::collect(std::vector<Event>& out) {
  for (const Event& event : withdrawn_) {
    if (Files::File* closing = files_.finished(event.handle, false)) start_close(event.handle, *closing);
    out.push_back(event);
  }
  withdrawn_.clear();
  if (!pool_) return;
  finished_.clear();
  pool_->take_finished(finished_);
  for (FileJob& job : finished_) {
    ++syscalls_;
    int result = job.result;
    if (job.kind == FileJob::Kind::kOpen) {
      if (result >= 0) {
        bool direct = false;
#ifdef O_DIRECT
        direct = (job.open_flags & O_DIRECT) != 0;
#endif
        result = files_.insert(UniqueFd(result), direct);
      }
      out.push_back({-1, EventKind::kCompleted, result, job.op_id});
      continue;
    }
    bool transfer = job.kind == FileJob::Kind::kRead || job.kind == FileJob::Kind::kWrite;
    if (transfer && job.position < 0) start_next_at_position(job.file);
    // The worker closed the descriptor of a close job: the table only forgets it.
    if (Files::File* closing = files_.finished(job.file, job.kind == FileJob::Kind::kClose)) start_close(job.file, *closing);
    out.push_back({job.file, EventKind::kCompleted, result, job.op_id});
  }
}

}  // namespace twinloop
