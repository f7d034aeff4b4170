// The benchmark's native echo: a backend echoing from C++, with no JavaScript on the data path —
// every connection's received bytes written back. Whoever owns the thread calls run() each time
// the backend may have work: native_echo.cc when Node's loop finds poll_fd() readable (the
// native ceiling inside Node), standalone_echo.cc after the backend's own blocking wait() (the
// primitive alone). Both run the same batches, so their difference is Node's loop and nothing else.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../core/backend.h"

namespace twinloop {

class EchoServer {
 public:
  static constexpr size_t kBatchEvents = 1024;  // the addon's default batchSize
  static constexpr size_t kArenaBytes = 1 << 20;  // and arenaSize

  // Opens backend `name` and listens on `address`; on failure returns null and says why.
  static std::unique_ptr<EchoServer> open(const std::string& name, const SocketAddress& address, std::string& error) {
    std::unique_ptr<Backend> backend;
    error = "backend '" + name + "' is not compiled in";
    for (const BackendEntry& entry : registered_backends()) {
      int rc = 0;
      if (entry.name == name) backend = entry.make(rc, error);
    }
    if (!backend) return nullptr;
    error.clear();
    HandleId listener = backend->listen(address, ListenOptions{});
    int rc = listener < 0 ? listener : backend->set_streaming(listener, Stream::kAccept, true);
    if (rc < 0) {
      error = "listen failed: " + std::string(std::strerror(-rc));
      return nullptr;
    }
    backend->flush();  // io_uring: the multishot accept is only queued until now
    return std::unique_ptr<EchoServer>(new EchoServer(std::move(backend), listener));
  }

  // The backend lets go of the buffers of the writes in flight before they are freed.
  ~EchoServer() { backend_.reset(); }

  Backend& backend() { return *backend_; }
  int port() {
    SocketAddress out;
    return backend_->address(listener_, false, out);
  }
  int64_t connections() const { return connections_; }
  uint64_t wakes() const { return wakes_; }
  uint64_t batches() const { return batches_; }

  // Drains and answers batches until the backend has nothing left, or kMaxRoundsPerWake of them
  // (core/limits.h), as the addon does.
  void run() {
    ++wakes_;
    for (int round = 0; round < kMaxRoundsPerWake; ++round) {
      sink_.reset();
      backend_->drain(sink_);
      if (sink_.count() == 0) break;
      ++batches_;
      for (const Event& event : sink_.filled()) handle(event);
      backend_->flush();
      if (!sink_.full()) break;
    }
  }

 private:
  EchoServer(std::unique_ptr<Backend> backend, HandleId listener)
      : backend_(std::move(backend)), listener_(listener), events_(kBatchEvents), arena_(kArenaBytes), sink_(events_, arena_) {}

  void handle(const Event& event) {
    switch (event.kind) {
      case EventKind::kAccepted:
        if (event.result >= 0) {
          ++connections_;
          if (backend_->set_streaming(event.result, Stream::kRead, true) < 0) close_connection(event.result);
        }
        break;
      case EventKind::kData:
        if (event.result > 0) echo(event.handle, event.aux, event.result);
        else close_connection(event.handle);  // EOF or error
        break;
      case EventKind::kCompleted: {  // a write that had to wait
        auto pending = writes_.find(event.aux);
        if (pending == writes_.end()) break;
        spare_.push_back(std::move(pending->second));
        writes_.erase(pending);
        if (event.result < 0 && event.result != kECANCELED) close_connection(event.handle);
        break;
      }
      default:
        break;
    }
  }

  // The arena is reused by the next drain, so the bytes are copied into a buffer that lives until
  // the write completes — what the JS servers do too (a Buffer per received chunk).
  void echo(HandleId connection, int32_t offset, int32_t length) {
    std::vector<uint8_t> bytes;
    if (!spare_.empty()) {
      bytes = std::move(spare_.back());
      spare_.pop_back();
    }
    bytes.assign(arena_.begin() + offset, arena_.begin() + offset + length);
    int32_t op = next_op_++;
    int rc = backend_->submit_write(connection, bytes, op, WriteKeep::in_place());
    if (rc == 0) {
      writes_.emplace(op, std::move(bytes));
      return;
    }
    spare_.push_back(std::move(bytes));
    if (rc < 0) close_connection(connection);
  }

  void close_connection(HandleId connection) {
    if (backend_->close(connection, false) == 0) --connections_;
  }

  std::unique_ptr<Backend> backend_;
  HandleId listener_;
  std::vector<Event> events_;
  std::vector<uint8_t> arena_;
  BatchSink sink_;
  std::unordered_map<int32_t, std::vector<uint8_t>> writes_;  // in flight, by operation id
  std::vector<std::vector<uint8_t>> spare_;                   // so a round trip allocates nothing
  int32_t next_op_ = 1;
  int64_t connections_ = 0;
  uint64_t wakes_ = 0;
  uint64_t batches_ = 0;
};

}  // namespace twinloop
