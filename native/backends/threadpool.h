// Blocking work for the readiness backends: a regular file is always "ready" to epoll and
// kqueue, so its reads and writes run on these threads, as libuv runs Node's fs calls. Finished
// jobs are collected by the loop thread in one batch per wake.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "../core/backend.h"

namespace twinloop {

struct FileJob {
  enum class Kind : uint8_t { kOpen, kRead, kWrite, kSync, kDataSync, kClose };
  Kind kind = Kind::kOpen;
  int fd = -1;
  HandleId file = -1;
  int32_t op_id = 0;
  std::span<uint8_t> buffer;  // read into, or write from
  int64_t position = 0;       // -1: the file's current position
  std::string path;           // kOpen
  int open_flags = 0;
  int mode = 0;
  int result = 0;             // set by the worker: >= 0 or -errno
};

class ThreadPool {
 public:
  // `wake` is called from a worker when a job finished and the loop should collect it.
  ThreadPool(int threads, void (*wake)(void* context), void* context);
  ~ThreadPool() { stop(); }
  // Finishes the jobs already running, drops the queued ones, joins the threads.
  void stop();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Jobs submitted during a batch are handed to the workers together by flush(): one lock and
  // one wake-up per batch instead of per job.
  void submit(FileJob job);
  void flush();
  // Moves every finished job into `out` (appending).
  void take_finished(std::vector<FileJob>& out);

 private:
  void work();
  static void run(FileJob& job);

  std::mutex mutex_;
  std::condition_variable work_ready_;
  std::vector<FileJob> submitted_;  // the loop thread's own, until flush()
  std::deque<FileJob> queued_;
  std::vector<FileJob> finished_;
  bool stopping_ = false;
  void (*wake_)(void*);
  void* context_;
  std::vector<std::thread> threads_;
};

}  // namespace twinloop
