// The watcher in pure N-API, for Windows: the IOCP backend's waiting thread wakes the JavaScript
// thread through a napi_threadsafe_function (which Node implements with a uv_async_t of its own).
// A MinGW cross-build links only against the N-API exports of node.exe — libuv's are not in the
// import library node-api-headers ships — so nothing here may touch uv.h.
//
// There is no N-API hook that runs once per turn of Node's loop (what uv_prepare gives on the
// other platforms), so a backend watched this way must make submissions take effect when they are
// made; IOCP does. The binding still calls flush() after every batch.
#include "loop_watcher.h"

namespace twinloop {
namespace {

class TsfnWatcher final : public LoopWatcher {
 public:
  ~TsfnWatcher() override {
    stop();
    // Abort, not release: calls still queued are dropped (call_js sees no env), and the function
    // is finalized, freeing `target_`, on the JavaScript thread.
    if (tsfn_ != nullptr) napi_release_threadsafe_function(tsfn_, napi_tsfn_abort);
  }

  std::string start(napi_env env, Backend& backend, WakeFn wake, void* owner) override {
    if (backend.poll_fd() >= 0) return "a backend with a descriptor needs the libuv watcher, which this build lacks";
    env_ = env;
    napi_value name;
    if (napi_create_string_utf8(env, "twinloop", NAPI_AUTO_LENGTH, &name) != napi_ok) return "napi_create_string_utf8 failed";
    // The target outlives this watcher until the function is finalized: a wake queued just before
    // stop() still reaches call_js, which must find it (and an owner of null) then.
    auto* target = new Target{wake, owner};
    if (napi_create_threadsafe_function(env, nullptr, nullptr, name, 0, 1, target, finalize, target, call_js, &tsfn_) != napi_ok) {
      delete target;
      tsfn_ = nullptr;
      return "napi_create_threadsafe_function failed";
    }
    target_ = target;
    napi_unref_threadsafe_function(env, tsfn_);  // JavaScript refs the loop while handles are open
    backend.set_wake(
        [](void* tsfn) {
          // Nonblocking with an unbounded queue: never waits, and the backend coalesces its wakes
          // so that the queue holds one call at most.
          napi_call_threadsafe_function(static_cast<napi_threadsafe_function>(tsfn), nullptr, napi_tsfn_nonblocking);
        },
        tsfn_);
    return {};
  }

  void stop() override {
    if (target_ != nullptr) target_->owner = nullptr;
  }

  void ref() override {
    if (tsfn_ != nullptr) napi_ref_threadsafe_function(env_, tsfn_);
  }

  void unref() override {
    if (tsfn_ != nullptr) napi_unref_threadsafe_function(env_, tsfn_);
  }

 private:
  struct Target {
    WakeFn wake;
    void* owner;
  };

  static void call_js(napi_env env, napi_value /*js_callback*/, void* context, void* /*data*/) {
    if (env == nullptr) return;  // the function is being torn down
    auto* target = static_cast<Target*>(context);
    if (target->owner != nullptr) target->wake(target->owner);
  }

  static void finalize(napi_env /*env*/, void* data, void* /*hint*/) { delete static_cast<Target*>(data); }

  napi_env env_ = nullptr;
  napi_threadsafe_function tsfn_ = nullptr;
  Target* target_ = nullptr;  // owned by the function (freed by finalize)
};

}  // namespace

std::unique_ptr<LoopWatcher> make_loop_watcher() { return std::make_unique<TsfnWatcher>(); }

}  // namespace twinloop
