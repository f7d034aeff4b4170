// The only file that knows N-API: a NativeLoop object per open(), driving one backend from
// Node's own event loop.
//
// How events reach JavaScript: a LoopWatcher (loop_watcher.h: a uv_poll_t on the backend's
// descriptor, or a thread-safe wake-up where there is none) says when there is work. Then the
// backend drains everything ready into the event buffer and data arena that JavaScript allocated
// and shares with us, and JavaScript's dispatch function is called once for the whole batch
// (N events cost one N-API call). Submissions made during that call are flushed to the kernel
// once, after it returns.
//
// Every method returns a number: >= 0 for success (a handle, a byte count) or a negative errno,
// which lib/ turns into a Node-style Error. TypeErrors are thrown only for misuse of this internal
// interface; C++ exceptions are disabled.
#include <napi.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "../core/backend.h"
#include "loop_watcher.h"
#include "platform_errors.h"

namespace twinloop {
namespace {

constexpr int kMaxRoundsPerWake = 8;  // beyond this, let Node's loop run other work first

class NativeLoop : public Napi::ObjectWrap<NativeLoop> {
 public:
  static Napi::Function define(Napi::Env env) {
    return DefineClass(env, "NativeLoop",
                       {
                           InstanceMethod<&NativeLoop::info>("info"),
                           InstanceMethod<&NativeLoop::listen>("listen"),
                           InstanceMethod<&NativeLoop::connect>("connect"),
                           InstanceMethod<&NativeLoop::shutdown>("shutdown"),
                           InstanceMethod<&NativeLoop::close_handle>("closeHandle"),
                           InstanceMethod<&NativeLoop::address>("address"),
                           InstanceMethod<&NativeLoop::watch>("watch"),
                           InstanceMethod<&NativeLoop::try_read>("tryRead"),
                           InstanceMethod<&NativeLoop::try_write>("tryWrite"),
                           InstanceMethod<&NativeLoop::try_accept>("tryAccept"),
                           InstanceMethod<&NativeLoop::submit_read>("read"),
                           InstanceMethod<&NativeLoop::submit_write>("write"),
                           InstanceMethod<&NativeLoop::submit_accept>("accept"),
                           InstanceMethod<&NativeLoop::read_start>("readStart"),
                           InstanceMethod<&NativeLoop::read_stop>("readStop"),
                           InstanceMethod<&NativeLoop::accept_start>("acceptStart"),
                           InstanceMethod<&NativeLoop::accept_stop>("acceptStop"),
                           InstanceMethod<&NativeLoop::file_open>("fileOpen"),
                           InstanceMethod<&NativeLoop::file_read>("fileRead"),
                           InstanceMethod<&NativeLoop::file_write>("fileWrite"),
                           InstanceMethod<&NativeLoop::file_sync>("fileSync"),
                           InstanceMethod<&NativeLoop::file_close>("fileClose"),
                           InstanceMethod<&NativeLoop::file_cancel>("fileCancel"),
                           InstanceMethod<&NativeLoop::set_thread_pool_size>("setThreadPoolSize"),
                           InstanceMethod<&NativeLoop::cancel>("cancel"),
                           InstanceMethod<&NativeLoop::start_timer>("startTimer"),
                           InstanceMethod<&NativeLoop::stats>("stats"),
                           InstanceMethod<&NativeLoop::ref>("ref"),
                           InstanceMethod<&NativeLoop::unref>("unref"),
                           InstanceMethod<&NativeLoop::close>("close"),
                       });
  }

  // new NativeLoop(backend: string, events: Int32Array, arena: Uint8Array, dispatch: (n) => void)
  explicit NativeLoop(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeLoop>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 4 || !info[0].IsString() || !info[1].IsTypedArray() || !info[2].IsTypedArray() ||
        !info[3].IsFunction()) {
      Napi::TypeError::New(env, "NativeLoop(backend, events, arena, dispatch)").ThrowAsJavaScriptException();
      return;
    }
    auto events = info[1].As<Napi::TypedArray>();
    auto arena = info[2].As<Napi::TypedArray>();
    if (events.TypedArrayType() != napi_int32_array || events.ElementLength() < 4 ||
        arena.TypedArrayType() != napi_uint8_array) {
      Napi::TypeError::New(env, "events must be an Int32Array, arena a Uint8Array").ThrowAsJavaScriptException();
      return;
    }
    if (!open_backend(info[0].As<Napi::String>().Utf8Value())) {
      Napi::Error error = Napi::Error::New(env, open_error_message_);
      error.Set("errno", Napi::Number::New(env, open_error_));
      error.Set("syscall", Napi::String::New(env, "open"));
      error.ThrowAsJavaScriptException();
      return;
    }
    events_ref_ = Napi::Persistent(events.As<Napi::Object>());
    arena_ref_ = Napi::Persistent(arena.As<Napi::Object>());
    dispatch_ = Napi::Persistent(info[3].As<Napi::Function>());
    sink_ = std::make_unique<BatchSink>(
        std::span<Event>(reinterpret_cast<Event*>(typed_data(events)), events.ElementLength() / 4),
        std::span<uint8_t>(typed_data(arena), arena.ByteLength()));
    async_context_ = std::make_unique<Napi::AsyncContext>(env, "twinloop");

    watcher_ = make_loop_watcher();
    if (std::string failure = watcher_->start(env, *backend_, on_watcher_wake, this); !failure.empty()) {
      watcher_.reset();
      backend_.reset();
      Napi::Error::New(env, "cannot watch the backend: " + failure).ThrowAsJavaScriptException();
      return;
    }
    napi_add_env_cleanup_hook(env, on_env_teardown, this);
    cleanup_hook_added_ = true;
  }

  ~NativeLoop() override { shut_down(); }

 private:
  static uint8_t* typed_data(const Napi::TypedArray& array) {
    return static_cast<uint8_t*>(array.ArrayBuffer().Data()) + array.ByteOffset();
  }

  // TWINLOOP_DISABLE_BACKENDS=io_uring,... makes backends unavailable, as a seccomp profile or a
  // sysctl would: how tests and users check the fallback of `auto`.
  static bool disabled_by_environment(std::string_view name) {
    const char* list = std::getenv("TWINLOOP_DISABLE_BACKENDS");
    if (list == nullptr) return false;
    std::string_view rest(list);
    while (!rest.empty()) {
      size_t comma = rest.find(',');
      if (rest.substr(0, comma) == name) return true;
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
    return false;
  }

  bool open_backend(const std::string& requested) {
    std::string reasons;
    for (const BackendEntry& entry : registered_backends()) {
      if (requested != "auto" && entry.name != requested) continue;
      int error = 0;
      std::string reason;
      if (disabled_by_environment(entry.name)) {
        error = platform_errors::kENOSYS;
        reason = "disabled by TWINLOOP_DISABLE_BACKENDS";
      } else {
        backend_ = entry.make(error, reason);
      }
      if (backend_) {
        if (!reasons.empty()) fallback_reason_ = reasons;
        return true;
      }
      open_error_ = error;
      if (!reasons.empty()) reasons += "; ";
      reasons += std::string(entry.name) + ": " + reason;
    }
    if (reasons.empty()) {
      open_error_ = platform_errors::kENOSYS;
      reasons = "backend '" + requested + "' is not available on this platform";
    }
    open_error_message_ = reasons;
    return false;
  }

  static void on_env_teardown(void* self) {
    auto* loop = static_cast<NativeLoop*>(self);
    loop->cleanup_hook_added_ = false;
    loop->shut_down();
  }

  static void on_watcher_wake(void* self) { static_cast<NativeLoop*>(self)->on_wake(); }

  void on_wake() {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    ++wakes_;
    for (int round = 0; round < kMaxRoundsPerWake && backend_; ++round) {
      sink_->reset();
      backend_->drain(*sink_);
      if (sink_->count() == 0) break;
      bool was_full = sink_->full();
      ++js_calls_;
      dispatch_.MakeCallback(Value(), {Napi::Number::New(env, static_cast<double>(sink_->count()))},
                             *async_context_);
      if (env.IsExceptionPending()) {
        // What Node does with an exception thrown from any callback: 'uncaughtException'.
        napi_fatal_exception(env, env.GetAndClearPendingException().Value());
      }
      if (!backend_) break;  // JavaScript closed the loop during the batch
      backend_->flush();
      if (!was_full) break;
    }
  }

  void shut_down() {
    if (cleanup_hook_added_) {
      napi_remove_env_cleanup_hook(Env(), on_env_teardown, this);
      cleanup_hook_added_ = false;
    }
    if (watcher_ != nullptr) watcher_->stop();  // before the backend closes its descriptor
    // Closes every socket the backend still owns and its own descriptors, and joins its waiting
    // thread if it has one — which must happen before the watcher that thread signals goes away.
    backend_.reset();
    watcher_.reset();
  }

  // Argument helpers: lib/ validates what users pass, so a failure here is an internal bug; it
  // still ends as a TypeError, never as a crash.
  bool check(bool ok, const char* what) {
    if (!ok) Napi::TypeError::New(Env(), what).ThrowAsJavaScriptException();
    return ok;
  }
  static int32_t int_arg(const Napi::CallbackInfo& info, size_t i) { return info[i].As<Napi::Number>().Int32Value(); }
  static std::span<uint8_t> bytes_arg(const Napi::CallbackInfo& info, size_t i) {
    auto array = info[i].As<Napi::TypedArray>();
    return {typed_data(array), array.ByteLength()};
  }
  bool args_ok(const Napi::CallbackInfo& info, size_t numbers, bool buffer_last = false) {
    if (!check(backend_ != nullptr, "the loop is closed")) return false;
    size_t needed = numbers + (buffer_last ? 1 : 0);
    if (!check(info.Length() >= needed, "missing arguments")) return false;
    for (size_t i = 0; i < numbers; ++i) {
      if (!check(info[i].IsNumber(), "expected a number")) return false;
    }
    return !buffer_last || check(info[numbers].IsTypedArray(), "expected a Uint8Array");
  }
  Napi::Value result(int value) { return Napi::Number::New(Env(), value); }

  static bool address_arg(const Napi::CallbackInfo& info, SocketAddress& out) {
    if (info.Length() < 3 || !info[0].IsNumber() || !info[1].IsString() || !info[2].IsNumber()) return false;
    int family = info[0].As<Napi::Number>().Int32Value();
    if (family != 4 && family != 6 && family != 0) return false;
    out.family = family == 4 ? SocketAddress::Family::kIPv4
                 : family == 6 ? SocketAddress::Family::kIPv6
                               : SocketAddress::Family::kUnix;
    out.host = info[1].As<Napi::String>().Utf8Value();
    out.port = static_cast<uint16_t>(info[2].As<Napi::Number>().Uint32Value());
    return true;
  }

  Napi::Value info(const Napi::CallbackInfo&) {
    Napi::Env env = Env();
    if (!check(backend_ != nullptr, "the loop is closed")) return env.Undefined();
    const BackendInfo& backend_info = backend_->info();
    auto out = Napi::Object::New(env);
    out.Set("backend", backend_info.name);
    out.Set("pattern", backend_info.native_pattern);
    auto features = Napi::Array::New(env, backend_info.features.size());
    for (uint32_t i = 0; i < backend_info.features.size(); ++i) features.Set(i, backend_info.features[i]);
    out.Set("features", features);
    if (!fallback_reason_.empty()) out.Set("fallbackReason", fallback_reason_);
    return out;
  }

  // listen(family: 4 | 6 | 0, host, port, backlog, reusePort, ipv6Only)
  Napi::Value listen(const Napi::CallbackInfo& info) {
    SocketAddress address;
    if (!check(backend_ != nullptr, "the loop is closed") || !check(address_arg(info, address), "bad address")) {
      return Env().Undefined();
    }
    ListenOptions options;
    if (info.Length() > 3 && info[3].IsNumber()) options.backlog = int_arg(info, 3);
    options.reuse_port = info.Length() > 4 && info[4].ToBoolean().Value();
    options.ipv6_only = info.Length() > 5 && info[5].ToBoolean().Value();
    return result(backend_->listen(address, options));
  }

  // connect(family, host, port, opId)
  Napi::Value connect(const Napi::CallbackInfo& info) {
    SocketAddress address;
    if (!check(backend_ != nullptr, "the loop is closed") || !check(address_arg(info, address), "bad address") ||
        !check(info.Length() > 3 && info[3].IsNumber(), "expected an operation id")) {
      return Env().Undefined();
    }
    return result(backend_->connect(address, int_arg(info, 3)));
  }

  Napi::Value shutdown(const Napi::CallbackInfo& info) {
    if (!args_ok(info, 1)) return Env().Undefined();
    return result(backend_->shutdown(int_arg(info, 0)));
  }

  // closeHandle(handle, reset)
  Napi::Value close_handle(const Napi::CallbackInfo& info) {
    if (!args_ok(info, 1)) return Env().Undefined();
    return result(backend_->close(int_arg(info, 0), info.Length() > 1 && info[1].ToBoolean().Value()));
  }

  // address(handle, peer) → { family, address, port } or a negative errno
  Napi::Value address(const Napi::CallbackInfo& info) {
    if (!args_ok(info, 1)) return Env().Undefined();
    SocketAddress out;
    int rc = backend_->address(int_arg(info, 0), info.Length() > 1 && info[1].ToBoolean().Value(), out);
    if (rc < 0) return result(rc);
    auto object = Napi::Object::New(Env());
    object.Set("family", out.family == SocketAddress::Family::kIPv4   ? "IPv4"
                         : out.family == SocketAddress::Family::kIPv6 ? "IPv6"
                                                                      : "unix");
    object.Set("address", out.host);
    object.Set("port", out.port);
    return object;
  }

  Napi::Value watch(const Napi::CallbackInfo& info) {
    if (!args_ok(info, 2)) return Env().Undefined();
    return result(backend_->watch(int_arg(info, 0), static_cast<uint32_t>(int_arg(info, 1))));
  }

  Napi::Value try_read(const Napi::CallbackInfo& info) {
    if (!args_ok(info, 1, true)) return Env().Undefined();
    return result(backend_->try_read(int_arg(info, 0), bytes_arg(info, 1)));
  }

  Napi::Value try_write(const Napi::CallbackInfo& info) {
    if (!args_ok(info, 1, true)) return Env().Undefined();
    return result(backend_->try_write(int_arg(info, 0), bytes_arg(info, 1)));
  }

  Napi::Value try_accept(const Napi::CallbackInfo& info) {
    if (!args_ok(info, 1)) return Env().Undefined();
    return result(backend_->try_accept(int_arg(info, 0)));
  }

  // read(handle, buffer, opId): lib/ keeps `buffer` referenced until the completion arrives.
  Napi::Value submit_read(const Napi::CallbackInfo& info) {
    if (!args_ok(info, 1, true) || !check(info.Length() > 2 && info[2].IsNumber(), "expected an operation id")) {
      return Env().Undefined();
    }
    return result(backend_->submit_read(int_arg(info, 0), bytes_arg(info, 1), int_arg(info, 2)));
  }

  // write(handle, buffer, opId) → 1 when taken at once, 0 when a completion will follow
  Napi::Value submit_write(const Napi::CallbackInfo& info) {
    if (!args_ok(info, 1, true) || !check(info.Length() > 2 && info[2].IsNumber(), "expected an operation id")) {
      return Env().Undefined();
    }
    return result(backend_->submit_write(int_arg(info, 0), bytes_arg(info, 1), int_arg(info, 2)));
  }

  Napi::Value submit_accept(const Napi::CallbackInfo& info) {
    if (!args_ok(info, 2)) return Env().Undefined();
    return result(backend_->submit_accept(int_arg(info, 0), int_arg(info, 1)));
  }

  Napi::Value read_start(const Napi::CallbackInfo& info) {
    if (!args_ok(info, 1)) return Env().Undefined();
    return result(backend_->read_start(int_arg(info, 0)));
  }

  Napi::Value read_stop(const Napi::CallbackInfo& info) {
    if (!args_ok(info, 1)) return Env().Undefined();
    return result(backend_->read_stop(int_arg(info, 0)));
  }

  Napi::Value accept_start(const Napi::CallbackInfo& info) {
    if (!args_ok(info, 1)) return Env().Undefined();
    return result(backend_->accept_start(int_arg(info, 0)));
  }

  Napi::Value accept_stop(const Napi::CallbackInfo& info) {
    if (!args_ok(info, 1)) return Env().Undefined();
    return result(backend_->accept_stop(int_arg(info, 0)));
  }

  // fileOpen(path, flags, mode, opId): flags as lib/file.ts packs them (kFile* below).
  Napi::Value file_open(const Napi::CallbackInfo& info) {
    if (!check(backend_ != nullptr, "the loop is closed") ||
        !check(info.Length() >= 4 && info[0].IsString() && info[1].IsNumber() && info[2].IsNumber() && info[3].IsNumber(),
               "fileOpen(path, flags, mode, opId)")) {
      return Env().Undefined();
    }
    uint32_t flags = static_cast<uint32_t>(int_arg(info, 1));
    FileOpenOptions options;
    options.read = flags & kFileRead;
    options.write = flags & kFileWrite;
    options.create = flags & kFileCreate;
    options.truncate = flags & kFileTruncate;
    options.append = flags & kFileAppend;
    options.exclusive = flags & kFileExclusive;
    options.direct = flags & kFileDirect;
    options.mode = int_arg(info, 2);
    return result(backend_->file_open(info[0].As<Napi::String>().Utf8Value(), options, int_arg(info, 3)));
  }

  // fileRead(file, buffer, position, opId) / fileWrite(…): position -1 means the current one.
  Napi::Value file_read(const Napi::CallbackInfo& info) {
    if (!file_io_args_ok(info)) return Env().Undefined();
    return result(backend_->file_read(int_arg(info, 0), bytes_arg(info, 1), position_arg(info, 2), int_arg(info, 3)));
  }

  Napi::Value file_write(const Napi::CallbackInfo& info) {
    if (!file_io_args_ok(info)) return Env().Undefined();
    return result(backend_->file_write(int_arg(info, 0), bytes_arg(info, 1), position_arg(info, 2), int_arg(info, 3)));
  }

  // fileSync(file, dataOnly, opId)
  Napi::Value file_sync(const Napi::CallbackInfo& info) {
    if (!args_ok(info, 1) || !check(info.Length() > 2 && info[2].IsNumber(), "expected an operation id")) {
      return Env().Undefined();
    }
    return result(backend_->file_sync(int_arg(info, 0), info[1].ToBoolean().Value(), int_arg(info, 2)));
  }

  Napi::Value file_close(const Napi::CallbackInfo& info) {
    if (!args_ok(info, 2)) return Env().Undefined();
    return result(backend_->file_close(int_arg(info, 0), int_arg(info, 1)));
  }

  // fileCancel(file, opId): file -1 for an open. The operation still completes, with -ECANCELED
  // only if it really was cancelled.
  Napi::Value file_cancel(const Napi::CallbackInfo& info) {
    if (!args_ok(info, 2)) return Env().Undefined();
    return result(backend_->file_cancel(int_arg(info, 0), int_arg(info, 1)));
  }

  Napi::Value set_thread_pool_size(const Napi::CallbackInfo& info) {
    if (!args_ok(info, 1)) return Env().Undefined();
    backend_->set_thread_pool_size(int_arg(info, 0));
    return Env().Undefined();
  }

  bool file_io_args_ok(const Napi::CallbackInfo& info) {
    return args_ok(info, 1, true) && check(info.Length() > 3 && info[2].IsNumber() && info[3].IsNumber(), "expected a position and an operation id");
  }
  static int64_t position_arg(const Napi::CallbackInfo& info, size_t i) {
    return info[i].As<Napi::Number>().Int64Value();
  }

  static constexpr uint32_t kFileRead = 1, kFileWrite = 2, kFileCreate = 4, kFileTruncate = 8, kFileAppend = 16,
                            kFileExclusive = 32, kFileDirect = 64;

  // cancel(handle, opId): handle -1 for a timer. The operation still completes (with -ECANCELED,
  // or its real result if it finished first), so lib/ keeps its buffer until then.
  Napi::Value cancel(const Napi::CallbackInfo& info) {
    if (!args_ok(info, 2)) return Env().Undefined();
    return result(backend_->cancel(int_arg(info, 0), int_arg(info, 1)));
  }

  // startTimer(delayMs, opId): completes as operation opId with 0 once delayMs have passed.
  Napi::Value start_timer(const Napi::CallbackInfo& info) {
    if (!args_ok(info, 2)) return Env().Undefined();
    double delay = info[0].As<Napi::Number>().DoubleValue();
    if (!check(delay >= 0 && delay <= 9007199254740991.0, "delayMs must be >= 0")) return Env().Undefined();
    return result(backend_->start_timer(static_cast<uint64_t>(delay), int_arg(info, 1)));
  }

  Napi::Value stats(const Napi::CallbackInfo&) {
    Napi::Env env = Env();
    Stats backend_stats = backend_ ? backend_->stats() : Stats{};
    auto out = Napi::Object::New(env);
    out.Set("syscalls", static_cast<double>(backend_stats.syscalls));
    out.Set("events", static_cast<double>(backend_stats.events));
    out.Set("wakes", static_cast<double>(wakes_));
    out.Set("batches", static_cast<double>(js_calls_));
    out.Set("jsCalls", static_cast<double>(js_calls_));
    return out;
  }

  Napi::Value ref(const Napi::CallbackInfo&) {
    if (watcher_ != nullptr) watcher_->ref();
    return Env().Undefined();
  }

  Napi::Value unref(const Napi::CallbackInfo&) {
    if (watcher_ != nullptr) watcher_->unref();
    return Env().Undefined();
  }

  Napi::Value close(const Napi::CallbackInfo&) {
    shut_down();
    return Env().Undefined();
  }

  std::unique_ptr<Backend> backend_;
  std::unique_ptr<BatchSink> sink_;
  std::unique_ptr<Napi::AsyncContext> async_context_;
  Napi::ObjectReference events_ref_;
  Napi::ObjectReference arena_ref_;
  Napi::FunctionReference dispatch_;
  std::unique_ptr<LoopWatcher> watcher_;
  bool cleanup_hook_added_ = false;
  std::string fallback_reason_;
  std::string open_error_message_;
  int open_error_ = 0;
  uint64_t wakes_ = 0;
  uint64_t js_calls_ = 0;
};

}  // namespace
}  // namespace twinloop

// allocAligned(size, alignment): O_DIRECT wants buffers aligned to the device's block size, which
// no JavaScript allocation promises; this one is, and is freed when the ArrayBuffer is collected.
static Napi::Value alloc_aligned(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) {
    Napi::TypeError::New(env, "allocAligned(size, alignment)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  double size = info[0].As<Napi::Number>().DoubleValue();
  double alignment = info[1].As<Napi::Number>().DoubleValue();
  if (!(size >= 1 && size <= double{1u << 30}) || !(alignment >= 8 && alignment <= 65536) ||
      (static_cast<size_t>(alignment) & (static_cast<size_t>(alignment) - 1)) != 0) {
    Napi::RangeError::New(env, "size must be 1 B to 1 GiB and alignment a power of two from 8 to 65536")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  size_t bytes = static_cast<size_t>(size);
  size_t align = static_cast<size_t>(alignment);
#ifdef _WIN32
  void* data = _aligned_malloc(bytes, align);
  auto release = [](Napi::Env, void* memory) { _aligned_free(memory); };
#else
  void* data = std::aligned_alloc(align, (bytes + align - 1) & ~(align - 1));
  auto release = [](Napi::Env, void* memory) { std::free(memory); };
#endif
  if (data == nullptr) {
    Napi::Error::New(env, "out of memory").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::memset(data, 0, bytes);
  return Napi::ArrayBuffer::New(env, data, bytes, release);
}

static Napi::Object init_twinloop(Napi::Env env, Napi::Object exports) {
  using namespace twinloop;
  exports.Set("NativeLoop", NativeLoop::define(env));
  exports.Set("allocAligned", Napi::Function::New(env, alloc_aligned, "allocAligned"));
  auto names = Napi::Array::New(env);
  uint32_t i = 0;
  for (const BackendEntry& entry : registered_backends()) names.Set(i++, std::string(entry.name));
  exports.Set("backends", names);
  // The few errno values lib/ must recognise, in the numbering the backends return.
  auto errors = Napi::Object::New(env);
  errors.Set("EAGAIN", platform_errors::kEAGAIN);
  errors.Set("ECANCELED", platform_errors::kECANCELED);
  errors.Set("EBADF", platform_errors::kEBADF);
  errors.Set("EMFILE", platform_errors::kEMFILE);
  errors.Set("ENFILE", platform_errors::kENFILE);
  errors.Set("ENOSYS", platform_errors::kENOSYS);      // cancel() or startTimer() not implemented
  errors.Set("ETIMEDOUT", platform_errors::kETIMEDOUT);  // connect and idle timeouts
  exports.Set("errors", errors);
  return exports;
}

NODE_API_MODULE(NODE_GYP_MODULE_NAME, init_twinloop)
