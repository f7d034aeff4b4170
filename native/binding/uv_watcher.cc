// The watcher where Node's libuv is reachable: the backend's descriptor is watched by one
// uv_poll_t, or, where there is none, a uv_async_t is signalled by the backend's own thread.
// Submissions made outside a batch (a timer, a promise settled elsewhere) are flushed once per
// turn of Node's loop by a uv_prepare_t, just before it blocks, so they are batched too.
#include <uv.h>

#include "loop_watcher.h"

namespace twinloop {
namespace {

class UvWatcher final : public LoopWatcher {
 public:
  ~UvWatcher() override {
    stop();
    if (watcher_ != nullptr) {
      uv_close(watcher_, [](uv_handle_t* handle) {
        if (handle->type == UV_POLL) delete reinterpret_cast<uv_poll_t*>(handle);
        else delete reinterpret_cast<uv_async_t*>(handle);
      });
    }
  }

  std::string start(napi_env env, Backend& backend, WakeFn wake, void* owner) override {
    backend_ = &backend;
    wake_ = wake;
    owner_ = owner;
    uv_loop_t* uv_loop = nullptr;
    napi_get_uv_event_loop(env, &uv_loop);
    int rc;
    if (backend.poll_fd() >= 0) {
      poll_ = new uv_poll_t;
      rc = uv_poll_init(uv_loop, poll_, backend.poll_fd());
      if (rc == 0) rc = uv_poll_start(poll_, UV_READABLE, on_poll);
      if (rc != 0) {
        delete poll_;
        poll_ = nullptr;
        return uv_strerror(rc);
      }
      poll_->data = this;
      watcher_ = reinterpret_cast<uv_handle_t*>(poll_);
    } else {
      auto* async = new uv_async_t;
      rc = uv_async_init(uv_loop, async, on_async);
      if (rc != 0) {
        delete async;
        return uv_strerror(rc);
      }
      async->data = this;
      watcher_ = reinterpret_cast<uv_handle_t*>(async);
      backend.set_wake([](void* handle) { uv_async_send(static_cast<uv_async_t*>(handle)); }, async);
    }
    uv_unref(watcher_);  // JavaScript refs the loop while handles are open
    flusher_ = new uv_prepare_t;
    uv_prepare_init(uv_loop, flusher_);
    flusher_->data = this;
    uv_prepare_start(flusher_, on_prepare);
    uv_unref(reinterpret_cast<uv_handle_t*>(flusher_));
    return {};
  }

  void stop() override {
    if (poll_ != nullptr) {
      uv_poll_stop(poll_);  // before the backend closes the descriptor
      poll_ = nullptr;
    }
    if (watcher_ != nullptr) watcher_->data = nullptr;
    if (flusher_ != nullptr) {
      flusher_->data = nullptr;
      uv_prepare_stop(flusher_);
      uv_close(reinterpret_cast<uv_handle_t*>(flusher_), [](uv_handle_t* handle) { delete reinterpret_cast<uv_prepare_t*>(handle); });
      flusher_ = nullptr;
    }
  }

  void ref() override {
    if (watcher_ != nullptr) uv_ref(watcher_);
  }

  void unref() override {
    if (watcher_ != nullptr) uv_unref(watcher_);
  }

 private:
  static void on_async(uv_async_t* handle) {
    auto* self = static_cast<UvWatcher*>(handle->data);
    if (self != nullptr) self->wake_(self->owner_);
  }

  static void on_poll(uv_poll_t* handle, int status, int /*events*/) {
    auto* self = static_cast<UvWatcher*>(handle->data);
    if (self == nullptr || status < 0) return;
    self->wake_(self->owner_);
  }

  static void on_prepare(uv_prepare_t* handle) {
    auto* self = static_cast<UvWatcher*>(handle->data);
    if (self != nullptr) self->backend_->flush();
  }

  Backend* backend_ = nullptr;
  WakeFn wake_ = nullptr;
  void* owner_ = nullptr;
  uv_handle_t* watcher_ = nullptr;  // poll_, or the async handle of a backend without a descriptor
  uv_poll_t* poll_ = nullptr;
  uv_prepare_t* flusher_ = nullptr;
};

}  // namespace

std::unique_ptr<LoopWatcher> make_loop_watcher() { return std::make_unique<UvWatcher>(); }

}  // namespace twinloop
