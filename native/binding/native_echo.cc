// The benchmark's ceiling inside Node: the native echo (echo_server.h) on Node's loop.
//
// It runs exactly as the twinloop addon does — the backend's descriptor watched by one uv_poll_t
// on Node's loop, drained into a BatchSink, submissions flushed once per batch — but handles the
// batch in C++ instead of calling into JavaScript. So "twinloop JS echo ÷ native echo" on the same
// backend isolates what the N-API boundary and the JS handler cost, and "native echo ÷ standalone
// echo" (standalone_echo.cc) what Node's loop costs.
//
// Built as its own addon (build/Release/native_echo.so) from the same backend sources; used
// only by bench/servers/twinloop-server.ts.
//
//   const echo = new NativeEcho('epoll', '127.0.0.1', 0);   // listens, echoes every connection
//   echo.port(); echo.info(); echo.stats(); echo.close();
#include <napi.h>
#include <uv.h>

#include <memory>
#include <string>

#include "echo_server.h"

namespace twinloop {
namespace {

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
    SocketAddress address{SocketAddress::Family::kIPv4, info[1].As<Napi::String>().Utf8Value(),
                          static_cast<uint16_t>(info[2].As<Napi::Number>().Uint32Value())};
    std::string error;
    echo_ = EchoServer::open(name, address, error);
    if (echo_ && echo_->backend().poll_fd() < 0) {
      echo_.reset();
      error = "backend '" + name + "' has no pollable descriptor";
    }
    if (!echo_) {
      Napi::Error::New(env, error).ThrowAsJavaScriptException();
      return;
    }
    uv_loop_t* uv_loop = nullptr;
    napi_get_uv_event_loop(env, &uv_loop);
    poll_ = new uv_poll_t;
    uv_poll_init(uv_loop, poll_, echo_->backend().poll_fd());
    poll_->data = this;
    uv_poll_start(poll_, UV_READABLE, on_poll);
  }

  ~NativeEcho() override { shut_down(); }

 private:
  static void on_poll(uv_poll_t* handle, int status, int /*events*/) {
    auto* self = static_cast<NativeEcho*>(handle->data);
    if (self != nullptr && status >= 0) self->echo_->run();
  }

  void shut_down() {
    if (poll_ != nullptr) {
      uv_poll_stop(poll_);  // before the backend closes the descriptor
      poll_->data = nullptr;
      uv_close(reinterpret_cast<uv_handle_t*>(poll_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
      poll_ = nullptr;
    }
    echo_.reset();
  }

  Napi::Value port(const Napi::CallbackInfo&) { return Napi::Number::New(Env(), echo_ ? echo_->port() : kEBADF); }

  Napi::Value info(const Napi::CallbackInfo&) {
    Napi::Env env = Env();
    auto out = Napi::Object::New(env);
    if (!echo_) return out;
    const BackendInfo& backend_info = echo_->backend().info();
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
    Stats backend_stats = echo_ ? echo_->backend().stats() : Stats{};
    auto out = Napi::Object::New(env);
    out.Set("syscalls", static_cast<double>(backend_stats.syscalls));
    out.Set("events", static_cast<double>(backend_stats.events));
    out.Set("wakes", static_cast<double>(echo_ ? echo_->wakes() : 0));
    out.Set("batches", static_cast<double>(echo_ ? echo_->batches() : 0));
    out.Set("jsCalls", 0);
    out.Set("connections", static_cast<double>(echo_ ? echo_->connections() : 0));
    return out;
  }

  Napi::Value close(const Napi::CallbackInfo&) {
    shut_down();
    return Env().Undefined();
  }

  std::unique_ptr<EchoServer> echo_;
  uv_poll_t* poll_ = nullptr;
};

}  // namespace
}  // namespace twinloop

static Napi::Object init_native_echo(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeEcho", twinloop::NativeEcho::define(env));
  return exports;
}

NODE_API_MODULE(NODE_GYP_MODULE_NAME, init_native_echo)
