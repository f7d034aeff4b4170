// The contract every OS backend implements (the role libuv's src/unix/internal.h plays).
//
// A backend owns sockets, identified by HandleId, and turns what the kernel reports into Events
// written to a BatchSink. The binding drains a backend whenever its poll_fd() is readable and
// hands the whole batch to JavaScript in one call.
//
// Both patterns are part of the contract, whatever the backend's native one is:
//   reactor  — watch() readiness, then try_read()/try_write()/try_accept() do the syscall now;
//   proactor — submit_read()/submit_write()/submit_accept()/connect() start an operation whose
//              completion arrives later as a kCompleted event; set_streaming() starts the
//              streaming forms (multishot on io_uring) that deliver data/connections as they come.
//
// Every call returns a value >= 0 on success or a negative errno (core/errors.h: libuv's
// numbering, which is -errno on POSIX) on failure. Nothing here throws. Every operation is pure
// virtual: each backend implements all of them (only set_wake and set_thread_pool_size, which
// not every backend needs, default to doing nothing).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "errors.h"
#include "interest.h"
#include "limits.h"

namespace twinloop {

// Slot index in the backend's handle table plus a generation, so that a handle kept by JavaScript
// after close is reported as EBADF instead of aliasing whatever reuses the slot.
using HandleId = int32_t;

enum class EventKind : int32_t {
  kReadable = 1,   // reactor: a watched handle can be read (or has EOF / an error pending)
  kWritable = 2,   // reactor: a watched handle can be written
  kCompleted = 3,  // proactor: operation `aux` finished with `result` (bytes, new handle, -errno)
  kData = 4,       // streaming read: `result` bytes at arena offset `aux`; 0 = EOF; < 0 = -errno
  kAccepted = 5,   // streaming accept: `result` is the new connection's handle or -errno
};

// The unit JavaScript reads: four int32 per event, in a buffer JavaScript allocated.
struct Event {
  HandleId handle;
  EventKind kind;
  int32_t result;
  int32_t aux;
};
static_assert(sizeof(Event) == 16, "JavaScript reads events as 4 x int32");

// Where a drain puts its events and the bytes of streaming reads. The memory belongs to the
// binding (it is shared with JavaScript); a backend only fills it.
class BatchSink {
 public:
  BatchSink(std::span<Event> events, std::span<uint8_t> arena) : events_(events), arena_(arena) {}

  // Full when no event fits or a streaming read found no room in the arena: either way the drain
  // should stop and let JavaScript consume the batch.
  bool full() const { return count_ == events_.size() || arena_exhausted_; }
  size_t count() const { return count_; }
  std::span<Event> filled() const { return events_.first(count_); }
  void push(const Event& event) {
    // Received bytes of one socket often come as several reads in one drain (io_uring's provided
    // buffers, 8 KiB each where the kernel cannot consume them incrementally, and a message that
    // spans two): bytes that continue the previous event in the arena extend it, so JavaScript
    // gets one chunk instead of one per kernel buffer.
    if (event.kind == EventKind::kData && event.result > 0 && count_ > 0) {
      Event& last = events_[count_ - 1];
      if (last.kind == EventKind::kData && last.handle == event.handle && last.result > 0 &&
          last.aux + last.result == event.aux) {
        last.result += event.result;
        return;
      }
    }
    events_[count_++] = event;
  }
  void reset() {
    count_ = 0;
    arena_used_ = 0;
    arena_exhausted_ = false;
  }

  // Free arena space for the next streaming read; empty when the batch cannot take more data.
  std::span<uint8_t> arena_space(size_t max_bytes) {
    size_t free_bytes = arena_.size() - arena_used_;
    if (count_ == events_.size() || free_bytes < kMinArenaRead) {
      arena_exhausted_ = true;
      return {};
    }
    return arena_.subspan(arena_used_, free_bytes < max_bytes ? free_bytes : max_bytes);
  }
  // Records that `bytes` of the span arena_space() returned were filled; returns their offset.
  int32_t commit_arena(size_t bytes) {
    auto offset = static_cast<int32_t>(arena_used_);
    arena_used_ += bytes;
    return offset;
  }

 private:
  // Smaller reads would split a typical message over several events.
  static constexpr size_t kMinArenaRead = 4096;

  std::span<Event> events_;
  std::span<uint8_t> arena_;
  size_t count_ = 0;
  size_t arena_used_ = 0;
  bool arena_exhausted_ = false;
};

// The streaming forms of reading and accepting: data (kData) or connections (kAccepted) delivered
// as they come, from read_start/accept_start until read_stop/accept_stop.
enum class Stream : uint8_t { kRead, kAccept };

struct SocketAddress {
  enum class Family { kIPv4, kIPv6, kUnix } family = Family::kIPv4;
  std::string host;  // numeric address for IP families (JavaScript resolves names), path for Unix
  uint16_t port = 0;
};

struct FileOpenOptions {
  bool read = true;
  bool write = false;
  bool create = false;
  bool truncate = false;
  bool append = false;
  bool exclusive = false;
  bool direct = false;  // O_DIRECT where the filesystem allows it: bypass the page cache
  int mode = 0666;
};

// TCP options a connected socket can change (set_socket_option), as Node's setNoDelay and
// setKeepAlive do. Values: kNoDelay and kKeepAlive 0 or 1; kKeepAliveIdle the seconds of silence
// before the first probe (>= 1; more than the kernel takes is its maximum), set with libuv's probe
// interval (1 s) and count (10).
enum class SocketOption : int32_t { kNoDelay = 1, kKeepAlive = 2, kKeepAliveIdle = 3 };

struct ListenOptions {
  int backlog = 511;
  bool reuse_port = false;
  bool ipv6_only = false;
};

// Counters that the benchmark divides by round trips; each backend counts its own syscalls.
struct Stats {
  uint64_t syscalls = 0;
  uint64_t events = 0;
};

struct BackendInfo {
  std::string name;            // "epoll", "io_uring", "kqueue", "iocp"
  std::string native_pattern;  // "reactor" or "proactor"
  std::vector<std::string> features;
};

// What a write leaves for later goes through this first: submit_write gets the caller's bytes,
// valid only while it runs, so what it sends inside the call needs no copy (an echo's write on
// epoll, nearly always); the bytes it keeps past the call, it keeps from what this returns — a
// copy in memory the caller owns until the write's completion (DESIGN.md, "The boundary"), or
// nothing when no memory could be had for it: backends call it only through
// SocketOperations::queue_write, which then fails the write with -ENOMEM.
class WriteKeep {
 public:
  using Copy = std::optional<std::span<const uint8_t>> (*)(void* context, std::span<const uint8_t> rest);
  WriteKeep(Copy copy, void* context) : copy_(copy), context_(context) {}
  // For bytes that already live until the completion: kept where they are.
  static WriteKeep in_place() {
    return {[](void*, std::span<const uint8_t> rest) -> std::optional<std::span<const uint8_t>> { return rest; }, nullptr};
  }
  std::optional<std::span<const uint8_t>> operator()(std::span<const uint8_t> rest) const { return copy_(context_, rest); }

 private:
  Copy copy_;
  void* context_;
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual const BackendInfo& info() const = 0;
  // The descriptor Node's loop watches for readability; -1 where the OS has none (IOCP).
  virtual int poll_fd() const = 0;
  // Only for backends whose poll_fd() is -1: the binding hands over a thread-safe `wake`, which
  // the backend's own waiting thread calls (coalesced, once per batch) when drain() has work.
  virtual void set_wake(void (*wake)(void* context), void* context) {
    (void)wake;
    (void)context;
  }

  // Sockets. listen()/connect() return a new handle; connect() completes as operation `op_id`.
  // With `local`, connect() binds the socket to that address first (port 0: any port).
  virtual int listen(const SocketAddress& address, const ListenOptions& options) = 0;
  virtual int connect(const SocketAddress& address, const SocketAddress* local, int32_t op_id) = 0;
  // SHUT_WR at once: bytes a write still has queued in the backend (or in an SQE, or on the
  // connection's thread) would then fail EPIPE, so the caller orders it after every write it
  // submitted (lib/net/socket.ts, end()).
  virtual int shutdown(HandleId handle) = 0;
  // Releases the handle at once; operations still in flight complete with -ECANCELED.
  // `reset` closes with an RST instead of a FIN.
  virtual int close(HandleId handle, bool reset) = 0;
  // Writes the local (or, with `peer`, remote) address into `out`; returns its port.
  virtual int address(HandleId handle, bool peer, SocketAddress& out) = 0;

  // Sets a TCP option of a socket (see SocketOption), or reads one back (the value as the OS
  // reports it: kNoDelay/kKeepAlive 0 or 1). On a Unix socket the OS refuses (-EOPNOTSUPP).
  virtual int set_socket_option(HandleId handle, SocketOption option, int value) = 0;
  virtual int socket_option(HandleId handle, SocketOption option) = 0;

  // Reactor.
  virtual int watch(HandleId handle, Interest interest) = 0;
  virtual int try_read(HandleId handle, std::span<uint8_t> buffer) = 0;         // -EAGAIN if not ready
  virtual int try_write(HandleId handle, std::span<const uint8_t> buffer) = 0;  // -EAGAIN if full
  virtual int try_accept(HandleId handle) = 0;                                   // new handle

  // Proactor. The caller keeps every buffer alive until the operation's completion.
  virtual int submit_read(HandleId handle, std::span<uint8_t> buffer, int32_t op_id) = 0;
  // Returns 1 when the whole buffer was taken at once (no event follows), 0 when an event will:
  // then `keep` was called, and the backend holds only what it returned (see WriteKeep).
  virtual int submit_write(HandleId handle, std::span<const uint8_t> buffer, int32_t op_id, WriteKeep keep) = 0;
  virtual int submit_accept(HandleId handle, int32_t op_id) = 0;
  // read_start/read_stop (Stream::kRead) and accept_start/accept_stop (Stream::kAccept).
  virtual int set_streaming(HandleId handle, Stream stream, bool on) = 0;

  // Cancels operation `op_id` of `handle` (-1 for a timer): it completes with -ECANCELED once the
  // kernel has let go of its buffer, or with its real result if it finished first. Returns
  // -ENOENT when no such operation is in flight. The completion always comes as an event, never
  // from inside this call.
  //
  // A write whose first bytes the peer already has cannot be withdrawn without tearing the byte
  // stream: it completes with the count that was sent (> 0 — a write otherwise completes with 0),
  // every write queued behind it with -ECANCELED, and later submit_write() calls fail with -EPIPE.
  // The socket is then only good for reading and closing; lib/'s net layer closes it.
  virtual int cancel(HandleId handle, int32_t op_id) = 0;

  // A one-shot timer in the backend's own wait (timerfd, IORING_OP_TIMEOUT, EVFILT_TIMER, …):
  // completes as operation `op_id` with 0 once `delay_ms` have passed.
  virtual int start_timer(uint64_t delay_ms, int32_t op_id) = 0;

  // Regular files. Each call completes as operation `op_id`: open with the new file handle,
  // read/write with the byte count (0 at EOF), sync and close with 0, or -errno. A readiness
  // backend cannot wait for a regular file — it is always "ready" — so the reactors run these on a
  // thread pool, as libuv does; the proactors submit them to the kernel.
  virtual int file_open(const std::string& path, const FileOpenOptions& options, int32_t op_id) = 0;
  virtual int file_read(HandleId file, std::span<uint8_t> buffer, int64_t position, int32_t op_id) = 0;
  virtual int file_write(HandleId file, std::span<const uint8_t> buffer, int64_t position, int32_t op_id) = 0;
  virtual int file_sync(HandleId file, bool data_only, int32_t op_id) = 0;
  // Closes once the operations in flight on the file have completed.
  virtual int file_close(HandleId file, int32_t op_id) = 0;
  // Cancels file operation `op_id` of `file` (-1: an open), wherever it waits: in the kernel
  // (IORING_OP_ASYNC_CANCEL, CancelIoEx) or on the thread pool (a job not started is dropped, a
  // running one has its syscall interrupted). It completes with -ECANCELED only if it really was
  // cancelled, else with its result: what the kernel did is never hidden. Returns -ENOENT when no
  // such operation is in flight. The completion always comes as an event, never from inside this
  // call. A close cannot be cancelled.
  virtual int file_cancel(HandleId file, int32_t op_id) = 0;
  // Threads for blocking work (file I/O on the reactors); takes effect before the first file op.
  virtual void set_thread_pool_size(int threads) { (void)threads; }

  // Moves what is ready into `sink` without blocking, until it is full or nothing is left.
  virtual void drain(BatchSink& sink) = 0;
  // For a loop that owns its thread instead of Node's loop watching poll_fd() (the benchmark's
  // standalone echo): hands queued submissions to the kernel and blocks in the primitive's own
  // wait (epoll_wait, io_uring_enter, kevent) until drain() has work or `timeout_ms` passed
  // (-1: no limit). Returns >= 0, or a negative errno (-ENOSYS where a backend cannot).
  virtual int wait(int timeout_ms) {
    (void)timeout_ms;
    return kENOSYS;
  }
  // Hands queued submissions to the kernel (io_uring); a no-op where calls take effect at once.
  virtual void flush() = 0;

  virtual Stats stats() const = 0;
};

// Each backend file registers its factory with one static BackendRegistration, so the build's
// list of files is the only list of backends. A factory that cannot work on this host returns null
// and sets `error` to a negative errno and `reason` to why, in words.
using BackendFactory = std::unique_ptr<Backend> (*)(int& error, std::string& reason);

struct BackendEntry {
  std::string_view name;
  BackendFactory make;
  int preference;  // `auto` tries the highest first
};

const std::vector<BackendEntry>& registered_backends();

struct BackendRegistration {
  explicit BackendRegistration(BackendEntry entry);
};

}  // namespace twinloop
