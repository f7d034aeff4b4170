#include "threadpool.h"

#include "../core/byte_pool.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <mutex>

namespace twinloop {

namespace {

void do_nothing(int) {}

void block_other_signals() { pthread_sigmask(SIG_SETMASK, &interruptible_mask(), nullptr); }

// The signal can land just before the worker enters its syscall, which then blocks all the same:
// it is sent again, ever less often, until the job returns.
constexpr auto kFirstResend = std::chrono::milliseconds(1);
constexpr auto kMaxResend = std::chrono::milliseconds(32);

}  // namespace

// A real-time signal that neither Node, V8, libuv nor the sanitizers use; installed once per
// process, without SA_RESTART, so that a blocking open/read/write (or a ppoll) returns EINTR
// (signal(7): "Interruption of system calls").
int interrupt_signal() {
  static const int kSignal = [] {
#ifdef SIGRTMIN
    int number = SIGRTMIN + 7;
#else
    int number = SIGUSR2;  // no real-time signals (macOS)
#endif
    struct sigaction action {};
    action.sa_handler = do_nothing;
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0;
    sigaction(number, &action, nullptr);
    return number;
  }();
  return kSignal;
}

// The faults stay deliverable, or a crash would hang instead of being reported.
const sigset_t& interruptible_mask() {
  static const sigset_t kMask = [] {
    sigset_t set;
    sigfillset(&set);
    for (int number : {interrupt_signal(), SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP}) sigdelset(&set, number);
    return set;
  }();
  return kMask;
}

ThreadPool::ThreadPool(int threads, void (*wake)(void*), void* context) : shared_(std::make_shared<Shared>()) {
  shared_->wake = wake;
  shared_->context = context;
  interrupt_signal();
  std::lock_guard lock(shared_->mutex);  // no worker looks at its pthread_t before it is set
  threads_.reserve(static_cast<size_t>(threads));
  for (int i = 0; i < threads; ++i) {
    auto& self = *shared_->workers.emplace_back(std::make_unique<Worker>());
    threads_.emplace_back([shared = shared_, &self] { work(shared, self); });
    self.thread = threads_.back().native_handle();
  }
}

std::vector<FileJob> ThreadPool::stop() {
  std::vector<FileJob> abandoned;
  if (threads_.empty()) return abandoned;
  Shared& s = *shared_;
  {
    std::unique_lock lock(s.mutex);
    s.stopping = true;
    s.queued.clear();  // never started: the loop fails them as it closes
    for (auto& worker : s.workers) {
      if (!worker->busy || worker->running.kind == FileJob::Kind::kClose) continue;
      worker->interrupt = true;
      pthread_kill(worker->thread, interrupt_signal());
      start_interrupter();
    }
    s.work_ready.notify_all();
    s.exited.wait_for(lock, kStopBound, [&] {
      return std::all_of(s.workers.begin(), s.workers.end(), [](const auto& worker) { return worker->exited; });
    });
    s.abandoned = true;
    for (auto& worker : s.workers) {
      if (worker->exited) continue;
      abandoned.push_back(worker->running);
      abandoned.back().result = kECANCELED;  // its thread disposes of what it really gets
    }
  }
  s.resend.notify_all();
  if (interrupter_.joinable()) interrupter_.join();
  for (size_t i = 0; i < threads_.size(); ++i) {
    if (s.workers[i]->exited) {
      threads_[i].join();
    } else {
      threads_[i].detach();  // it holds `shared_` and touches nothing else
    }
  }
  threads_.clear();
  abandoned_operations += abandoned.size();
  return abandoned;
}

void ThreadPool::submit(FileJob job) { submitted_.push_back(std::move(job)); }

void ThreadPool::flush() {
  if (submitted_.empty()) return;
  size_t count = submitted_.size();
  {
    std::lock_guard lock(shared_->mutex);
    for (auto& job : submitted_) shared_->queued.push_back(std::move(job));
  }
  submitted_.clear();
  if (count >= threads_.size()) {
    shared_->work_ready.notify_all();
  } else {
    for (size_t i = 0; i < count; ++i) shared_->work_ready.notify_one();
  }
}

int ThreadPool::cancel(HandleId file, int32_t op_id) {
  auto matches = [&](const FileJob& job) {
    return job.op_id == op_id && job.file == file && job.kind != FileJob::Kind::kClose;
  };
  Shared& s = *shared_;
  std::lock_guard lock(s.mutex);
  if (s.stopping) return kENOENT;
  if (auto it = std::find_if(submitted_.begin(), submitted_.end(), matches); it != submitted_.end()) {
    finish_cancelled(std::move(*it));
    submitted_.erase(it);
    return 0;
  }
  if (auto it = std::find_if(s.queued.begin(), s.queued.end(), matches); it != s.queued.end()) {
    finish_cancelled(std::move(*it));
    s.queued.erase(it);
    return 0;
  }
  for (auto& worker : s.workers) {
    if (!worker->busy || !matches(worker->running)) continue;
    if (!worker->interrupt.exchange(true)) {
      pthread_kill(worker->thread, interrupt_signal());
      start_interrupter();
      s.resend.notify_all();
    }
    return 0;
  }
  return kENOENT;
}

void ThreadPool::finish_cancelled(FileJob job) {
  job.result = kECANCELED;
  bool first = shared_->finished.empty();
  shared_->finished.push_back(std::move(job));
  if (first) shared_->wake(shared_->context);
}

void ThreadPool::start_interrupter() {
  if (!interrupter_.joinable()) interrupter_ = std::thread([shared = shared_] { interrupt_until_done(shared); });
}

void ThreadPool::take_finished(std::vector<FileJob>& out) {
  std::lock_guard lock(shared_->mutex);
  for (auto& job : shared_->finished) out.push_back(std::move(job));
  shared_->finished.clear();
}

void ThreadPool::interrupt_until_done(const std::shared_ptr<Shared>& shared) {
  block_other_signals();
  Shared& s = *shared;
  std::unique_lock lock(s.mutex);
  auto period = kFirstResend;
  while (!s.abandoned) {
    bool outstanding = false;
    for (auto& worker : s.workers) {
      if (!worker->busy || !worker->interrupt) continue;
      // `busy` is cleared under this lock before the thread can exit, so it is still alive.
      pthread_kill(worker->thread, interrupt_signal());
      outstanding = true;
    }
    if (outstanding) {
      s.resend.wait_for(lock, period);
      period = std::min(period * 2, kMaxResend);
    } else {
      period = kFirstResend;
      s.resend.wait(lock);
    }
  }
}

void ThreadPool::work(const std::shared_ptr<Shared>& shared, Worker& self) {
  block_other_signals();
  Shared& s = *shared;
  for (;;) {
    FileJob job;
    {
      std::unique_lock lock(s.mutex);
      s.work_ready.wait(lock, [&] { return s.stopping || !s.queued.empty(); });
      if (s.stopping) break;
      job = std::move(s.queued.front());
      s.queued.pop_front();
      self.busy = true;
      self.interrupt = false;
      self.running = job;
      self.running.buffer = {};
    }
    run(job, self.interrupt);
    std::lock_guard lock(s.mutex);
    self.busy = false;
    if (s.abandoned) {
      // stop() gave up on this thread: nobody will collect what it made.
      if (job.kind == FileJob::Kind::kOpen && job.result >= 0) ::close(job.result);
      break;
    }
    bool first = s.finished.empty();
    s.finished.push_back(std::move(job));
    // Under the lock: once stop() has begun, the backend this wakes may be going away.
    if (first && !s.stopping) s.wake(s.context);
  }
  std::lock_guard lock(s.mutex);
  self.exited = true;
  s.exited.notify_all();
}

void ThreadPool::run(FileJob& job, const std::atomic<bool>& interrupt) {
  ssize_t rc = 0;
  for (;;) {
    if (job.kind != FileJob::Kind::kClose && interrupt) {
      job.result = kECANCELED;
      return;
    }
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
        // The descriptor is gone even then (close(2), Linux); a retry could close another file.
        if (rc < 0 && errno == EINTR) rc = 0;
        break;
    }
    // EINTR is our signal: a cancel (then the loop above ends it), or one that reached this
    // thread after the job it was meant for had finished (then the syscall is simply retried).
    if (rc >= 0 || errno != EINTR) break;
  }
  job.result = rc >= 0 ? static_cast<int>(rc) : -errno;
}

}  // namespace twinloop
