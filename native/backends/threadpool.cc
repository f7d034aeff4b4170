#include "threadpool.h"

#include <fcntl.h>
#include <unistd.h>

#include <mutex>

#include <cerrno>

namespace twinloop {

ThreadPool::ThreadPool(int threads, void (*wake)(void*), void* context) : wake_(wake), context_(context) {
  threads_.reserve(static_cast<size_t>(threads));
  for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { work(); });
}

void ThreadPool::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  work_ready_.notify_all();
  for (auto& thread : threads_) thread.join();
  threads_.clear();
}

void ThreadPool::submit(FileJob job) { submitted_.push_back(std::move(job)); }

void ThreadPool::flush() {
  if (submitted_.empty()) return;
  size_t count = submitted_.size();
  {
    std::lock_guard lock(mutex_);
    for (auto& job : submitted_) queued_.push_back(std::move(job));
  }
  submitted_.clear();
  if (count >= threads_.size()) {
    work_ready_.notify_all();
  } else {
    for (size_t i = 0; i < count; ++i) work_ready_.notify_one();
  }
}

void ThreadPool::take_finished(std::vector<FileJob>& out) {
  std::lock_guard lock(mutex_);
  for (auto& job : finished_) out.push_back(std::move(job));
  finished_.clear();
}

void ThreadPool::work() {
  for (;;) {
    FileJob job;
    {
      std::unique_lock lock(mutex_);
      work_ready_.wait(lock, [this] { return stopping_ || !queued_.empty(); });
      if (stopping_) return;
      job = std::move(queued_.front());
      queued_.pop_front();
    }
    run(job);
    bool first;
    {
      std::lock_guard lock(mutex_);
      first = finished_.empty();
      finished_.push_back(std::move(job));
    }
    // One wake per batch: the loop takes every finished job at once.
    if (first) wake_(context_);
  }
}

void ThreadPool::run(FileJob& job) {
  ssize_t rc = 0;
  switch (job.kind) {
    case FileJob::Kind::kOpen:
      rc = ::open(job.path.c_str(), job.open_flags, job.mode);
      break;
    case FileJob::Kind::kRead:
      rc = job.position < 0 ? ::read(job.fd, job.buffer.data(), job.buffer.size())
                            : ::pread(job.fd, job.buffer.data(), job.buffer.size(), job.position);
      break;
    case FileJob::Kind::kWrite:
      rc = job.position < 0 ? ::write(job.fd, job.buffer.data(), job.buffer.size())
                            : ::pwrite(job.fd, job.buffer.data(), job.buffer.size(), job.position);
      break;
    case FileJob::Kind::kSync:
      rc = ::fsync(job.fd);
      break;
    case FileJob::Kind::kDataSync:
#ifdef __APPLE__
      rc = ::fsync(job.fd);  // macOS has no fdatasync
#else
      rc = ::fdatasync(job.fd);
#endif
      break;
    case FileJob::Kind::kClose:
      rc = ::close(job.fd);
      break;
  }
  job.result = rc >= 0 ? static_cast<int>(rc) : -errno;
}

}  // namespace twinloop
