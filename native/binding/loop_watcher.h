// How Node's event loop learns that a backend has work: the one piece of the binding that depends
// on what the host offers beside N-API. The build picks one implementation:
//   uv_watcher.cc   — libuv handles on Node's loop (uv_poll on the backend's descriptor, or a
//                     uv_async for a backend without one); Linux, macOS, BSD.
//   tsfn_watcher.cc — a napi_threadsafe_function, pure N-API; Windows, where the IOCP backend has
//                     no descriptor and a MinGW cross-build has neither uv.h nor libuv's exports.
#pragma once

#include <node_api.h>

#include <memory>
#include <string>

#include "../core/backend.h"

namespace twinloop {

class LoopWatcher {
 public:
  // Called on the JavaScript thread whenever the backend may have events to drain.
  using WakeFn = void (*)(void* owner);

  // Releases the watcher's handles. Only once the backend is gone: a backend thread may signal
  // the watcher until it is joined.
  virtual ~LoopWatcher() = default;

  // Starts watching `backend`; returns an empty string or why it could not. The watcher may call
  // backend.flush() once per turn of Node's loop, before the loop blocks.
  virtual std::string start(napi_env env, Backend& backend, WakeFn wake, void* owner) = 0;
  // Before the backend is destroyed: no more wake or flush calls, no more use of its descriptor.
  virtual void stop() = 0;
  // Whether the watcher keeps Node's loop alive (JavaScript refs it while handles are open).
  virtual void ref() = 0;
  virtual void unref() = 0;
};

std::unique_ptr<LoopWatcher> make_loop_watcher();

}  // namespace twinloop
