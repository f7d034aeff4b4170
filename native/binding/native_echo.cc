// The benchmark's ceiling: a backend echoing from C++, with no JavaScript on the data path.
//
// It runs exactly as the twinloop addon does — the backend's descriptor watched by one uv_poll_t
// on Node's loop, drained into a BatchSink, submissions flushed once per batch — but handles the
// batch here instead of calling into JavaScript. So "twinloop JS echo ÷ native echo" on the same
// backend isolates what the N-API boundary and the JS handler cost, and nothing else.
//
// Built as its own addon (build/Release/native_echo.node) from the same backend sources; used
// only by bench/servers/twinloop-server.ts.
//
//   const echo = new NativeEcho('epoll', '127.0.0.1', 0);   // listens, echoes every connection
//   echo.port(); echo.info(); echo.stats(); echo.close();
#include <napi.h>
#include <uv.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "../core/backend.h"

namespace twinloop {
namespace {

constexpr size_t kBatchEvents = 1024;      // the addon's default batchSize
constexpr size_t kArenaBytes = 1 << 20;    // and arenaSize

class NativeEcho : public Napi::ObjectWrap<NativeEcho> {
 public:
  static Napi::Function define(Napi::Env env) {
    return DefineClass(env, "NativeEcho",
                       {
                           InstanceMethod<&NativeEcho::port>("port"),
                           InstanceMethod<&NativeEcho::info>("info"),
                           InstanceMethod<&NativeEcho::stats>("stats"),
                           InstanceMethod<&NativeEcho::close>("close"),
                       });
  }

  // new NativeEcho(backend: string, host: string (numeric IPv4), port: number)
  explicit NativeEcho(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeEcho>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[0].IsString() || !info[1].IsString() || !info[2].IsNumber()) {
      Napi::TypeError::New(env, "NativeEcho(backend, host, port)").ThrowAsJavaScriptException();
      return;
    }
    std::string name = info[0].As<Napi::String>().Utf8Value();
    std::string reason = "backend '" + name + "' is not compiled in";
    for (const BackendEntry& entry : registered_backends()) {
      int error = 0;
      if (entry.name == name) backend_ = entry.make(error, reason);
    }
    if (!backend_ || backend_->poll_fd() < 0) {
      if (backend_) reason = "backend '" + name + "' has no pollable descriptor";
      backend_.reset();
      Napi::Error::New(env, reason).ThrowAsJavaScriptException();
      return;
    }
    SocketAddress address{SocketAddress::Family::kIPv4, info[1].As<Napi::String>().Utf8Value(),
                          static_cast<uint16_t>(info[2].As<Napi::Number>().Uint32Value())};
    listener_ = backend_->listen(address, ListenOptions{});
    int rc = listener_ < 0 ? listener_ : backend_->set_streaming(listener_, Stream::kAccept, true);
    if (rc < 0) {
      backend_.reset();
      Napi::Error::New(env, std::string("listen failed: ") + std::strerror(-rc)).ThrowAsJavaScriptException();
      return;
    }
    backend_->flush();  // io_uring: the multishot accept is only queued until now
    events_.resize(kBatchEvents);
    arena_.resize(kArenaBytes);
    sink_ = std::make_unique<BatchSink>(std::span<Event>(events_), std::span<uint8_t>(arena_));
    uv_loop_t* uv_loop = nullptr;
    napi_get_uv_event_loop(env, &uv_loop);
    poll_ = new uv_poll_t;
    uv_poll_init(uv_loop, poll_, backend_->poll_fd());
    poll_->data = this;
    uv_poll_start(poll_, UV_READABLE, on_poll);
  }

  ~NativeEcho() override { shut_down(); }

 private:
  static void on_poll(uv_poll_t* handle, int status, int /*events*/) {
    auto* self = static_cast<NativeEcho*>(handle->data);
    if (self != nullptr && status >= 0) self->on_wake();
  }

  void on_wake() {
    ++wakes_;
    for (int round = 0; round < kMaxRoundsPerWake; ++round) {
      sink_->reset();
      backend_->drain(*sink_);
      if (sink_->count() == 0) break;
      ++batches_;
      for (size_t i = 0; i < sink_->count(); ++i) handle(events_[i]);
      backend_->flush();
      if (!sink_->full()) break;
    }
  }

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
    int rc = backend_->submit_write(connection, bytes, op);
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

  void shut_down() {
    if (poll_ != nullptr) {
      uv_poll_stop(poll_);  // before the backend closes the descriptor
      poll_->data = nullptr;
      uv_close(reinterpret_cast<uv_handle_t*>(poll_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
      poll_ = nullptr;
    }
    backend_.reset();
  }

  Napi::Value port(const Napi::CallbackInfo&) {
    SocketAddress out;
    int rc = backend_ ? backend_->address(listener_, false, out) : kEBADF;
    return Napi::Number::New(Env(), rc);
  }

  Napi::Value info(const Napi::CallbackInfo&) {
    Napi::Env env = Env();
    auto out = Napi::Object::New(env);
    if (!backend_) return out;
    const BackendInfo& backend_info = backend_->info();
    out.Set("backend", backend_info.name);
    out.Set("pattern", backend_info.native_pattern);
    auto features = Napi::Array::New(env, backend_info.features.size());
    for (uint32_t i = 0; i < backend_info.features.size(); ++i) features.Set(i, backend_info.features[i]);
    out.Set("features", features);
    return out;
  }

  // The same shape as the addon's loop.stats(), plus the connections open now.
  Napi::Value stats(const Napi::CallbackInfo&) {
    Napi::Env env = Env();
    Stats backend_stats = backend_ ? backend_->stats() : Stats{};
    auto out = Napi::Object::New(env);
    out.Set("syscalls", static_cast<double>(backend_stats.syscalls));
    out.Set("events", static_cast<double>(backend_stats.events));
    out.Set("wakes", static_cast<double>(wakes_));
    out.Set("batches", static_cast<double>(batches_));
    out.Set("jsCalls", 0);
    out.Set("connections", static_cast<double>(connections_));
    return out;
  }

  Napi::Value close(const Napi::CallbackInfo&) {
    shut_down();
    return Env().Undefined();
  }

  std::unique_ptr<Backend> backend_;
  HandleId listener_ = -1;
  std::vector<Event> events_;
  std::vector<uint8_t> arena_;
  std::unique_ptr<BatchSink> sink_;
  uv_poll_t* poll_ = nullptr;
  std::unordered_map<int32_t, std::vector<uint8_t>> writes_;  // in flight, by operation id
  std::vector<std::vector<uint8_t>> spare_;                   // so a round trip allocates nothing
  int32_t next_op_ = 1;
  int64_t connections_ = 0;
  uint64_t wakes_ = 0;
  uint64_t batches_ = 0;
};

}  // namespace
}  // namespace twinloop

static Napi::Object init_native_echo(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeEcho", twinloop::NativeEcho::define(env));
  return exports;
}

NODE_API_MODULE(NODE_GYP_MODULE_NAME, init_native_echo)
