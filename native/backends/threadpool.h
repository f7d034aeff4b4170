// Blocking work for the readiness backends: a regular file is always "ready" to epoll and
// kqueue, so its reads and writes run on these threads, as libuv runs Node's fs calls. Finished
// jobs are collected by the loop thread in one batch per wake.
//
// A job can be cancelled, and stop() returns in bounded time, whatever a job is blocked on (an
// open of a FIFO without a writer, a read of one without data): a worker blocked in a syscall is
// interrupted with a signal of our own, whose handler does nothing and is installed without
// SA_RESTART, so that the syscall fails with EINTR. Workers block every other asynchronous signal,
// so EINTR there always means ours.
#pragma once

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "../core/backend.h"

namespace twinloop {

// The signal that interrupts a worker's blocking syscall (the pool's workers, the threads
// backend's socket threads): it only makes the syscall return EINTR.
int interrupt_signal();
// Every signal blocked but that one and the faults: what a worker's thread takes.
const sigset_t& interruptible_mask();

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
  int result = 0;             // set by the worker: >= 0 or -errno (-ECANCELED once cancelled)
};

class ThreadPool {
 public:
  // `wake` is called from a worker when a job finished and the loop should collect it; never
  // once stop() has begun.
  ThreadPool(int threads, void (*wake)(void* context), void* context);
  ~ThreadPool() { stop(); }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Drops the queued jobs, interrupts the running ones and joins the threads, waiting at most
  // kStopBound. Returns the jobs still running then (in uninterruptible sleep: a disk or a network
  // filesystem that does not answer): their threads are detached and clean up after themselves
  // (a descriptor such a job opens is closed), and the caller must not close the descriptor of
  // such a kClose job again. Their buffer fields are empty, their results -ECANCELED.
  std::vector<FileJob> stop();

  // Jobs submitted during a batch are handed to the workers together by flush(): one lock and
  // one wake-up per batch instead of per job.
  void submit(FileJob job);
  void flush();
  // Cancels job `op_id` of `file` (-1 for an open): one not started yet finishes with -ECANCELED
  // at once; a running one is interrupted and finishes with -ECANCELED if its syscall was, or
  // with its result if it completed first. A close cannot be cancelled. Returns -ENOENT when no
  // such job is queued or running (it finished: its completion is on its way).
  int cancel(HandleId file, int32_t op_id);
  // Moves every finished job into `out` (appending).
  void take_finished(std::vector<FileJob>& out);

  static constexpr auto kStopBound = std::chrono::milliseconds(1000);

 private:
  struct Worker {
    pthread_t thread{};
    bool busy = false;
    bool exited = false;
    std::atomic<bool> interrupt = false;  // read by the worker between its syscall's attempts
    FileJob running;                      // what it runs (metadata only), while busy
  };

  // Shared with the threads, which may outlive the pool when stop() gives up on them.
  struct Shared {
    std::mutex mutex;
    std::condition_variable work_ready;
    std::condition_variable resend;  // the interrupter's: a cancel is outstanding, or abandoned
    std::condition_variable exited;
    std::deque<FileJob> queued;
    std::vector<FileJob> finished;
    std::vector<std::unique_ptr<Worker>> workers;
    bool stopping = false;
    bool abandoned = false;  // stop() gave up waiting: nobody collects any more
    void (*wake)(void*);
    void* context;
  };

  static void work(const std::shared_ptr<Shared>& shared, Worker& self);
  static void interrupt_until_done(const std::shared_ptr<Shared>& shared);
  static void run(FileJob& job, const std::atomic<bool>& interrupt);
  void finish_cancelled(FileJob job);  // with the lock held
  void start_interrupter();            // with the lock held

  std::shared_ptr<Shared> shared_;
  std::vector<FileJob> submitted_;  // the loop thread's own, until flush()
  std::vector<std::thread> threads_;
  std::thread interrupter_;  // started by the first cancel of a running job, or by stop()
};

}  // namespace twinloop
