// The only file that knows N-API: a NativeLoop object per open(), driving one backend from
// Node's own event loop.
//
// How events reach JavaScript: a LoopWatcher (loop_watcher.h: a uv_poll_t on the backend's
// descriptor, or a thread-safe wake-up where there is none) says when there is work. Then the
// backend drains everything ready into the event buffer and data arena that JavaScript allocated
// and shares with us (both looked up again before every drain: a loop whose buffers were
// detached or resized closes rather than write where they were), and JavaScript's dispatch
// function is called once for the whole batch (N events cost one N-API call). Submissions made
// during that call are flushed to the kernel once, after it returns.
//
// Every method returns a number: >= 0 for success (a handle, a byte count) or a negative errno,
// which lib/ turns into a Node-style Error. TypeErrors are thrown only for misuse of this internal
// interface; C++ exceptions are disabled.
//
// The boundary: every buffer argument goes through view_of(), which reads a view's real address
// and length at the moment of the call. Synchronous calls (tryRead, tryWrite) use that memory
// directly; an operation that outlives the call owns its memory (a Lease from the BytePool), so
// nothing JavaScript does to its buffers afterwards — transfer, shrink, collect — can reach the
// kernel or a pool thread. The wake path never throws and calls into JavaScript only while the
// environment can run it (worker termination, teardown).
#include <napi.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../core/backend.h"
#include "../core/byte_pool.h"
#include "../core/errors.h"
#include "../core/handle_table.h"
#include "loop_watcher.h"

namespace twinloop {
namespace {

// Bits of fileOpen()'s flags; lib/file.ts reads them from the addon's `constants.fileFlags`.
constexpr uint32_t kFileRead = 1, kFileWrite = 2, kFileCreate = 4, kFileTruncate = 8, kFileAppend = 16, kFileExclusive = 32,
                   kFileDirect = 64;

// The events of a batch handed to JavaScript in one call. Between calls Node runs the microtasks
// the events queued, so a promise-based handler resumes before its connection's objects leave the
// cache: with the whole batch (1 024 events, ~1 KiB of JavaScript state each) in one call, every
// one is touched again only after all the others. `npm run bench -- --instructions --connections
// 2000` (callgrind's model of this machine's 48 KiB L1 and 1 MiB L2), L2 misses per round trip:
// net layer 71 -> 52 on epoll, 110 -> 99 on io_uring; the Proactor API on epoll 41 -> 31. The
// calls added cost ~20 instructions a round trip, within the counts' run-to-run noise.
constexpr size_t kEventsPerCallback = 64;

// The most views one writeGathered takes (lib/ sends a handful: a stream's _writev of <= 64 KiB).
constexpr uint32_t kMaxGatheredViews = 1u << 20;

constexpr const char* kLentMemoryGone = "the loop is closed: its events or arena buffer was detached, transferred or resized";

class NativeLoop : public Napi::ObjectWrap<NativeLoop> {
 public:
  static Napi::Function define(Napi::Env env) { return DefineClass(env, "NativeLoop", {}); }

  // new NativeLoop(backend: string, events: Int32Array, arena: Uint8Array, dispatch: (start, end) => void)
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
    // A drain reads back events it wrote (a Data event extended, a completion's id looked up to
    // free what the operation owned): over a SharedArrayBuffer, another thread could rewrite them
    // in between, and a wrong id frees memory the kernel still writes into.
    if (!over_array_buffer(env, events) || !over_array_buffer(env, arena)) {
      Napi::TypeError::New(env, "events and arena must be views of an ArrayBuffer, not of a SharedArrayBuffer").ThrowAsJavaScriptException();
      return;
    }
    if (!open_backend(info[0].As<Napi::String>().Utf8Value())) {
      Napi::Error error = Napi::Error::New(env, open_error_message_);
      define_own(error.Value(), "errno", Napi::Number::New(env, open_error_));
      define_own(error.Value(), "syscall", Napi::String::New(env, "open"));
      error.ThrowAsJavaScriptException();
      return;
    }
    std::span<uint8_t> event_bytes, arena_bytes;
    view_of(env, events, event_bytes);
    view_of(env, arena, arena_bytes);
    events_ref_ = Napi::Persistent(events.As<Napi::Object>());
    arena_ref_ = Napi::Persistent(arena.As<Napi::Object>());
    lent_events_ = event_bytes;
    lent_arena_ = arena_bytes;
    // Weak until JavaScript says the loop is busy (setLiveness): the function closes over the
    // loop's JavaScript half, which holds this object, so a strong reference would keep an idle
    // loop that nobody can reach alive for ever, with its descriptors.
    dispatch_ = Napi::Weak(info[3].As<Napi::Function>());
    sink_ = std::make_unique<BatchSink>(
        std::span<Event>(reinterpret_cast<Event*>(event_bytes.data()), event_bytes.size() / sizeof(Event)),
        arena_bytes);
    napi_value resource_name;
    napi_create_string_utf8(env, "twinloop", NAPI_AUTO_LENGTH, &resource_name);
    napi_async_init(env, nullptr, resource_name, &async_context_);

    watcher_ = make_loop_watcher();
    if (std::string failure = watcher_->start(env, *backend_, on_watcher_wake, this); !failure.empty()) {
      watcher_.reset();
      backend_.reset();
      Napi::Error::New(env, "cannot watch the backend: " + failure).ThrowAsJavaScriptException();
      return;
    }
    napi_add_env_cleanup_hook(env, on_env_teardown, this);
    cleanup_hook_added_ = true;
    if (!bind_methods(env, info.This())) Napi::Error::New(env, "cannot define the loop's methods").ThrowAsJavaScriptException();
  }

  ~NativeLoop() override {
    link_->loop = nullptr;
    shut_down();
  }

 private:
  // Every method is a function of this loop's own, an own property of its object, rather than a
  // prototype method: a prototype method finds its loop with napi_unwrap, a private-symbol lookup
  // of ~800 instructions a call (callgrind: a third of what a proactor write's submission costs).
  // A function finds its loop through a Link, which outlives the loop should the function do so.
  struct Link {
    NativeLoop* loop;
  };
  using Method = Napi::Value (NativeLoop::*)(const Napi::CallbackInfo&);

  template <Method method>
  static napi_value call(napi_env env, napi_callback_info callback_info) {
    Napi::CallbackInfo info(env, callback_info);
    NativeLoop* loop = static_cast<std::shared_ptr<Link>*>(info.Data())->get()->loop;
    if (loop == nullptr) {
      Napi::Error::New(env, "this loop's object was collected").ThrowAsJavaScriptException();
      return nullptr;
    }
    return (loop->*method)(info);
  }

  bool bind_methods(napi_env env, napi_value object) {
    static constexpr struct {
      const char* name;
      napi_callback callback;
    } methods[] = {
        {"info", call<&NativeLoop::info>},
        {"listen", call<&NativeLoop::listen>},
        {"connect", call<&NativeLoop::connect>},
        {"shutdown", call<&NativeLoop::shutdown>},
        {"closeHandle", call<&NativeLoop::close_handle>},
        {"address", call<&NativeLoop::address>},
        {"setSocketOption", call<&NativeLoop::set_socket_option>},
        {"socketOption", call<&NativeLoop::socket_option>},
        {"watch", call<&NativeLoop::watch>},
        {"tryRead", call<&NativeLoop::try_read>},
        {"tryWrite", call<&NativeLoop::try_write>},
        {"tryAccept", call<&NativeLoop::try_accept>},
        {"read", call<&NativeLoop::submit_read>},
        {"write", call<&NativeLoop::submit_write>},
        {"writeGathered", call<&NativeLoop::submit_write_gathered>},
        {"accept", call<&NativeLoop::submit_accept>},
        {"readStart", call<&NativeLoop::set_streaming<Stream::kRead, true>>},
        {"readStop", call<&NativeLoop::set_streaming<Stream::kRead, false>>},
        {"acceptStart", call<&NativeLoop::set_streaming<Stream::kAccept, true>>},
        {"acceptStop", call<&NativeLoop::set_streaming<Stream::kAccept, false>>},
        {"fileOpen", call<&NativeLoop::file_open>},
        {"fileRead", call<&NativeLoop::file_read>},
        {"fileWrite", call<&NativeLoop::file_write>},
        {"fileSync", call<&NativeLoop::file_sync>},
        {"fileClose", call<&NativeLoop::file_close>},
        {"fileCancel", call<&NativeLoop::file_cancel>},
        {"setThreadPoolSize", call<&NativeLoop::set_thread_pool_size>},
        {"cancel", call<&NativeLoop::cancel>},
        {"startTimer", call<&NativeLoop::start_timer>},
        {"stats", call<&NativeLoop::stats>},
        {"setLiveness", call<&NativeLoop::set_liveness>},
        {"close", call<&NativeLoop::close>},
    };
    for (const auto& method : methods) {
      auto* data = new std::shared_ptr<Link>(link_);
      napi_value function;
      if (napi_create_function(env, method.name, NAPI_AUTO_LENGTH, method.callback, data, &function) != napi_ok) {
        delete data;
        return false;
      }
      if (napi_add_finalizer(env, function, data, release_link, nullptr, nullptr) != napi_ok) {
        delete data;  // the function is dropped unseen: nothing can call it
        return false;
      }
      napi_property_descriptor property{method.name, nullptr, nullptr, nullptr, nullptr, function, napi_default, nullptr};
      if (napi_define_properties(env, object, 1, &property) != napi_ok) return false;
    }
    return true;
  }

  static void release_link(napi_env, void* data, void*) { delete static_cast<std::shared_ptr<Link>*>(data); }

  // An operation in flight, by id: what it owns until its completion event (see finish_leases).
  // Every operation has one, memory or not, so that no id is in flight twice.
  struct Lease {
    OwnedBytes bytes;
    napi_ref target = nullptr;  // a read's view, where its bytes go at completion
    napi_env env = nullptr;
    Lease() = default;
    Lease(Lease&& other) noexcept
        : bytes(std::move(other.bytes)), target(std::exchange(other.target, nullptr)), env(other.env) {}
    Lease& operator=(Lease&&) = delete;
    ~Lease() {
      if (target != nullptr) napi_delete_reference(env, target);
    }
  };

  // The leases in flight, by operation id, in a vector indexed by the id's slot: lib/ hands ids
  // out as a slot and a generation (lib/slot-map.ts, by this addon's handleSlotBits), its slots
  // dense and the most recently freed reused first. A hash map cost an allocation and two
  // lookups per operation (~350 instructions a write, callgrind). Each entry keeps its whole id,
  // so an id that is not the one in flight finds nothing; a slot is at most 2^20.
  class LeaseTable {
   public:
    // Whether an operation in flight holds `id`'s slot, under this id or another generation of it.
    bool slot_taken(int32_t id) const {
      size_t slot = slot_of(id);
      return slot < entries_.size() && entries_[slot].lease.has_value();
    }
    bool contains(int32_t id) const { return slot_taken(id) && entries_[slot_of(id)].id == id; }
    // `id`'s slot must be free (slot_taken).
    void insert(int32_t id, Lease&& lease) {
      size_t slot = slot_of(id);
      if (slot >= entries_.size()) entries_.resize(slot + 1);
      entries_[slot].id = id;
      entries_[slot].lease.emplace(std::move(lease));
      ++count_;
    }
    Lease* find(int32_t id) { return contains(id) ? &*entries_[slot_of(id)].lease : nullptr; }
    void erase(int32_t id) {
      if (!contains(id)) return;
      entries_[slot_of(id)].lease.reset();
      --count_;
    }
    bool empty() const { return count_ == 0; }
    template <typename Visit>
    void for_each(Visit visit) {
      for (Entry& entry : entries_) {
        if (entry.lease.has_value()) visit(*entry.lease);
      }
    }
    void clear() {
      entries_.clear();
      count_ = 0;
    }

   private:
    struct Entry {
      int32_t id = 0;
      std::optional<Lease> lease;
    };
    static size_t slot_of(int32_t id) { return static_cast<uint32_t>(id) & ((1u << kHandleSlotBits) - 1); }
    std::vector<Entry> entries_;
    size_t count_ = 0;
  };

  // Where the bytes of a TypedArray or DataView are now. napi_get_*_info give the real address
  // for views over a SharedArrayBuffer too (node-addon-api's ArrayBuffer().Data() gives null
  // there), and a detached or out-of-bounds view has no bytes. Valid until JavaScript runs again.
  static bool view_of(napi_env env, napi_value value, std::span<uint8_t>& out) {
    void* data = nullptr;
    size_t bytes = 0;
    bool is_data_view = false;
    napi_typedarray_type type;
    size_t length = 0;
    // It refuses (napi_invalid_arg) anything but a typed array: no napi_is_typedarray call first.
    if (napi_get_typedarray_info(env, value, &type, &length, &data, nullptr, nullptr) == napi_ok) {
      size_t element_size = element_size_of(type);
      if (element_size == 0) return false;
      bytes = length * element_size;
    } else if (napi_is_dataview(env, value, &is_data_view) == napi_ok && is_data_view) {
      if (napi_get_dataview_info(env, value, &bytes, &data, nullptr, nullptr) != napi_ok) return false;
    } else {
      return false;
    }
    out = data == nullptr || bytes == 0 ? std::span<uint8_t>() : std::span<uint8_t>(static_cast<uint8_t*>(data), bytes);
    return true;
  }

  static bool over_array_buffer(napi_env env, napi_value typed_array) {
    napi_value buffer = nullptr;
    bool is_array_buffer = false;
    return napi_get_typedarray_info(env, typed_array, nullptr, nullptr, nullptr, &buffer, nullptr) == napi_ok &&
           napi_is_arraybuffer(env, buffer, &is_array_buffer) == napi_ok && is_array_buffer;
  }

  // Makes `name` an own data property of `object`. Napi::Object::Set assigns, and an assignment
  // runs a setter of that name on Object.prototype: user JavaScript, which could close this loop
  // while a reference into it is held (info() reads the backend's), or throw and leave its
  // exception pending for the next Set.
  static void define_own(Napi::Object object, const char* name, napi_value value) {
    napi_property_descriptor property{name, nullptr, nullptr, nullptr, nullptr, value, napi_default_jsproperty, nullptr};
    napi_define_properties(object.Env(), object, 1, &property);
  }

  static size_t element_size_of(napi_typedarray_type type) {
    switch (type) {
      case napi_int8_array:
      case napi_uint8_array:
      case napi_uint8_clamped_array:
        return 1;
      case napi_int16_array:
      case napi_uint16_array:
        return 2;
      case napi_int32_array:
      case napi_uint32_array:
      case napi_float32_array:
        return 4;
      case napi_float64_array:
      case napi_bigint64_array:
      case napi_biguint64_array:
        return 8;
      default:
        return 0;  // a kind this build does not know: refused
    }
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
        error = kENOSYS;
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
      open_error_ = kENOSYS;
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

  // Raw N-API with every status checked: node-addon-api's wrappers turn a failed call into a
  // thrown error, and throwing fails — fatally — while a worker is being terminated, which is
  // exactly when Node's loop may still wake us.
  void on_wake() {
    napi_env env = Env();
    napi_handle_scope scope;
    if (napi_open_handle_scope(env, &scope) != napi_ok) return;
    ++wakes_;
    for (int round = 0; round < kMaxRoundsPerWake && backend_; ++round) {
      if (!lent_memory_intact(env)) {
        close_for(kLentMemoryGone);
        break;
      }
      sink_->reset();
      backend_->drain(*sink_);
      if (sink_->count() == 0) break;
      finish_leases();
      bool was_full = sink_->full();
      ++batches_;
      if (!dispatch(env)) break;
      if (!backend_) break;  // JavaScript closed the loop during the batch
      backend_->flush();
      if (!was_full) break;
    }
    napi_close_handle_scope(env, scope);
  }

  // Hands the batch to JavaScript, kEventsPerCallback events a call; false when JavaScript cannot
  // run any more (the environment is going away: the batch's events are dropped and the watcher
  // stops; teardown closes the rest).
  bool dispatch(napi_env env) {
    const size_t count = sink_->count();  // sink_ goes with the loop, which a callback may close
    for (size_t start = 0; start < count && backend_; start += kEventsPerCallback) {
      if (!dispatch_events(env, start, std::min(count, start + kEventsPerCallback))) return false;
    }
    return true;
  }

  // Events [start, end) of the batch, in one callback: Node runs the microtasks they queue when it
  // returns, so a handler's continuation runs while its connection's objects are still in cache.
  bool dispatch_events(napi_env env, size_t start, size_t end) {
    napi_value function = nullptr, receiver, ignored;
    napi_value range[2];
    if (napi_get_reference_value(env, dispatch_, &function) != napi_ok || function == nullptr ||
        napi_get_global(env, &receiver) != napi_ok ||
        napi_create_uint32(env, static_cast<uint32_t>(start), &range[0]) != napi_ok ||
        napi_create_uint32(env, static_cast<uint32_t>(end), &range[1]) != napi_ok) {
      return stop_waking();
    }
    if (napi_make_callback(env, async_context_, receiver, function, 2, range, &ignored) == napi_ok) return true;
    bool pending = false;
    if (napi_is_exception_pending(env, &pending) != napi_ok || !pending) return stop_waking();
    // What Node does with an exception thrown from any callback: 'uncaughtException' (which
    // napi_fatal_exception declines, harmlessly, once the environment is stopping).
    napi_value error;
    if (napi_get_and_clear_last_exception(env, &error) == napi_ok) napi_fatal_exception(env, error);
    return true;
  }

  // Whether the events and arena JavaScript lent the loop are still where the sink writes: a
  // reference keeps their objects alive, not their memory, which a resize frees (V8 decommits a
  // resizable buffer's pages) and a transfer hands to another buffer, freed when that one goes.
  // Looked at before every drain, and no JavaScript runs until the drain is over: a detached view
  // has no bytes and a shrunk one fewer, so a drain never writes where they were. Two reference
  // reads and two typed-array lookups a round, none per event.
  bool lent_memory_intact(napi_env env) const {
    return view_unchanged(env, events_ref_, lent_events_) && view_unchanged(env, arena_ref_, lent_arena_);
  }
  static bool view_unchanged(napi_env env, const Napi::ObjectReference& ref, std::span<uint8_t> lent) {
    napi_value value = nullptr;
    std::span<uint8_t> now;
    return napi_get_reference_value(env, ref, &value) == napi_ok && value != nullptr && view_of(env, value, now) &&
           now.data() == lent.data() && now.size() >= lent.size();
  }

  // Closes the loop from the inside, as close() does, and tells every later call why.
  void close_for(const char* reason) {
    closed_reason_ = reason;
    shut_down();
  }

  bool stop_waking() {
    if (watcher_ != nullptr) watcher_->stop();
    return false;
  }

  // Before JavaScript sees a batch: every operation that completed in it gives back what it
  // owned, and a read's bytes are copied into the caller's view — which, if it can no longer hold
  // them (detached, transferred or shrunk meanwhile), completes the read with -EFAULT instead.
  void finish_leases() {
    if (leases_.empty()) return;
    for (Event& event : sink_->filled()) {
      if (event.kind != EventKind::kCompleted) continue;
      Lease* lease = leases_.find(event.aux);
      if (lease == nullptr) continue;
      if (lease->target != nullptr && event.result > 0) event.result = copy_out(*lease, static_cast<size_t>(event.result));
      leases_.erase(event.aux);
    }
  }

  int copy_out(const Lease& lease, size_t count) {
    napi_value value = nullptr;
    std::span<uint8_t> view;
    if (napi_get_reference_value(Env(), lease.target, &value) != napi_ok || value == nullptr ||
        !view_of(Env(), value, view) || view.size() < count) {
      return kEFAULT;
    }
    std::memcpy(view.data(), lease.bytes.span().data(), count);
    return static_cast<int>(count);
  }

  void shut_down() {
    if (cleanup_hook_added_) {
      napi_remove_env_cleanup_hook(Env(), on_env_teardown, this);
      cleanup_hook_added_ = false;
    }
    if (watcher_ != nullptr) watcher_->stop();  // before the backend closes its descriptor
    // Closes every socket the backend still owns and its own descriptors, and joins its waiting
    // thread if it has one — which must happen before the watcher that thread signals goes away.
    uint64_t abandoned_before = abandoned_operations;
    backend_.reset();
    watcher_.reset();
    if (abandoned_operations != abandoned_before) {
      leases_.for_each([](Lease& lease) { lease.bytes.abandon(); });
    }
    // Nothing uses an operation's memory now; what JavaScript lent us goes back at once, not
    // when this object is collected (a closed loop must not hold its 1 MiB arena).
    leases_.clear();
    sink_.reset();
    events_ref_.Reset();
    arena_ref_.Reset();
    dispatch_.Reset();
    if (async_context_ != nullptr) {
      napi_async_destroy(Env(), async_context_);
      async_context_ = nullptr;
    }
  }

  // Argument helpers: lib/ validates what users pass, so a failure here is an internal bug; it
  // still ends as a TypeError, never as a crash.
  // Inlined, the throw apart: a write passes ten of these (~100 instructions when each was a call).
  bool check(bool ok, const char* what) {
    if (!ok) [[unlikely]] throw_type_error(what);
    return ok;
  }
  [[gnu::cold, gnu::noinline]] void throw_type_error(const char* what) { Napi::TypeError::New(Env(), what).ThrowAsJavaScriptException(); }
  // The arguments from index `first` on, as int32s (an argument left out is undefined, refused
  // too): each read once, as napi_get_value_int32 refuses a non-number itself, where a test of
  // its type and then a read were two calls (~32 instructions per argument of every call).
  template <typename... Ints>
  bool ints_at(const Napi::CallbackInfo& info, size_t first, Ints&... out) {
    size_t i = first;
    return (check(napi_get_value_int32(Env(), info[i++], &out) == napi_ok, "expected a number") && ...);
  }
  // Argument `i` as a double (a position, a delay), refused as ints_at refuses a non-number.
  bool double_at(const Napi::CallbackInfo& info, size_t i, double& out) {
    return check(napi_get_value_double(Env(), info[i], &out) == napi_ok, "expected a number");
  }
  // The loop is open, and the first arguments are int32s (a handle, an operation id…).
  template <typename... Ints>
  bool args_ok(const Napi::CallbackInfo& info, Ints&... out) {
    return check(backend_ != nullptr, closed_reason_) && ints_at(info, 0, out...);
  }
  // (handle, view, int32s…)
  template <typename... Ints>
  bool view_args_ok(const Napi::CallbackInfo& info, int32_t& handle, std::span<uint8_t>& view, Ints&... rest) {
    return args_ok(info, handle) && check(view_of(Env(), info[1], view), "expected a TypedArray or DataView") && ints_at(info, 2, rest...);
  }


  // Submits an operation that reads into (`into_view`) or writes from the view info[1] through
  // memory it owns: a block the read's bytes are copied out of at completion, or a copy of the
  // bytes to write. `submit` gets that memory; a write it takes at once (1) or a failure (< 0)
  // completes nothing later, so the memory goes back now.
  template <typename Submit>
  Napi::Value submit_leased(const Napi::CallbackInfo& info, std::span<uint8_t> view, int32_t op_id, bool into_view, Submit submit) {
    if (!id_is_free(op_id)) return Env().Undefined();
    if (!into_view && !transfer_ok(view.size())) return Env().Undefined();
    Lease lease;
    lease.env = Env();
    if (into_view) {
      if (napi_create_reference(Env(), info[1], 1, &lease.target) != napi_ok) return result(kENOMEM);
      lease.bytes = pool_.acquire(std::min(view.size(), kMaxTransfer));
    } else {
      lease.bytes = pool_.copy_of(view);
    }
    return submit_lease(op_id, std::move(lease), into_view, submit);
  }

  // Lends the lease's memory to `submit`; keeps the lease while the operation is in flight. The
  // pool had none to give (an empty lease): the operation fails as a backend's failures do.
  template <typename Submit>
  Napi::Value submit_lease(int32_t op_id, Lease lease, bool into_view, Submit submit) {
    if (!lease.bytes) [[unlikely]] return result(kENOMEM);
    int rc = submit(lease.bytes.span());
    if (rc < 0 || (!into_view && rc == 1)) return result(rc);
    leases_.insert(op_id, std::move(lease));
    return result(rc);
  }
  // An int32, so V8 makes it a small integer at once (Number::New takes a double and tests it).
  Napi::Value result(int value) {
    napi_value out = nullptr;
    napi_create_int32(Env(), value, &out);
    return {Env(), out};
  }
  bool transfer_ok(size_t bytes) {
    if (bytes <= kMaxTransfer) return true;
    Napi::RangeError::New(Env(), "a write moves at most 1 GiB (lib/ splits longer ones)").ThrowAsJavaScriptException();
    return false;
  }

  // Ids come from lib/, one per slot while in flight; a repeated one (or another generation of
  // its slot) would let one completion free memory another operation still lends to the kernel.
  bool id_is_free(int32_t op_id) { return check(!leases_.slot_taken(op_id), "operation id already in flight"); }

  // Submits an operation that owns no memory; it is in flight until its completion event.
  template <typename Submit>
  Napi::Value track(int32_t op_id, Submit submit) {
    if (!id_is_free(op_id)) return Env().Undefined();
    int rc = submit();
    if (rc >= 0) leases_.insert(op_id, Lease{});
    return result(rc);
  }

  static bool address_arg(const Napi::CallbackInfo& info, SocketAddress& out) {
    if (info.Length() < 3 || !info[0].IsNumber() || !info[1].IsString() || !info[2].IsNumber()) return false;
    int family = info[0].As<Napi::Number>().Int32Value();
    if (family != 4 && family != 6 && family != 0) return false;
    out.family = family == 4 ? SocketAddress::Family::kIPv4
                 : family == 6 ? SocketAddress::Family::kIPv6
                               : SocketAddress::Family::kUnix;
    double port = info[2].As<Napi::Number>().DoubleValue();
    if (!(port >= 0 && port <= 65535)) return false;
    out.host = info[1].As<Napi::String>().Utf8Value();
    out.port = static_cast<uint16_t>(port);
    return true;
  }

  Napi::Value info(const Napi::CallbackInfo&) {
    Napi::Env env = Env();
    if (!check(backend_ != nullptr, closed_reason_)) return env.Undefined();
    const BackendInfo& backend_info = backend_->info();
    auto out = Napi::Object::New(env);
    define_own(out, "backend", Napi::String::New(env, backend_info.name));
    define_own(out, "pattern", Napi::String::New(env, backend_info.native_pattern));
    auto features = Napi::Array::New(env, backend_info.features.size());
    for (uint32_t i = 0; i < backend_info.features.size(); ++i) {
      define_own(features, std::to_string(i).c_str(), Napi::String::New(env, backend_info.features[i]));
    }
    define_own(out, "features", features);
    if (!fallback_reason_.empty()) define_own(out, "fallbackReason", Napi::String::New(env, fallback_reason_));
    return out;
  }

  // listen(family: 4 | 6 | 0, host, port, backlog, reusePort, ipv6Only)
  Napi::Value listen(const Napi::CallbackInfo& info) {
    SocketAddress address;
    if (!check(backend_ != nullptr, closed_reason_) || !check(address_arg(info, address), "bad address")) {
      return Env().Undefined();
    }
    ListenOptions options;
    if (info.Length() > 3 && info[3].IsNumber()) options.backlog = info[3].As<Napi::Number>().Int32Value();
    options.reuse_port = info.Length() > 4 && info[4].ToBoolean().Value();
    options.ipv6_only = info.Length() > 5 && info[5].ToBoolean().Value();
    return result(backend_->listen(address, options));
  }

  // connect(family, host, port, opId, localHost?): with localHost (a numeric address of the same
  // family), the socket is bound to it, on any port, before connecting.
  Napi::Value connect(const Napi::CallbackInfo& info) {
    SocketAddress address;
    int32_t op_id = 0;
    if (!check(backend_ != nullptr, closed_reason_) || !check(address_arg(info, address), "bad address") || !ints_at(info, 3, op_id)) {
      return Env().Undefined();
    }
    SocketAddress local;
    bool bind_local = info.Length() > 4 && !info[4].IsUndefined();
    if (bind_local) {
      if (!check(info[4].IsString() && address.family != SocketAddress::Family::kUnix, "localHost must be a string, for TCP")) {
        return Env().Undefined();
      }
      local = {address.family, info[4].As<Napi::String>().Utf8Value(), 0};
    }
    return track(op_id, [&] { return backend_->connect(address, bind_local ? &local : nullptr, op_id); });
  }

  // setSocketOption(handle, option, value) / socketOption(handle, option): option as SocketOption
  // numbers it (1 noDelay, 2 keepAlive, 3 keepAliveIdle, in seconds).
  Napi::Value set_socket_option(const Napi::CallbackInfo& info) {
    int32_t handle = 0, option_number = 0, value = 0;
    SocketOption option;
    if (!args_ok(info, handle, option_number, value) || !option_arg(option_number, option)) return Env().Undefined();
    return result(backend_->set_socket_option(handle, option, value));
  }

  Napi::Value socket_option(const Napi::CallbackInfo& info) {
    int32_t handle = 0, option_number = 0;
    SocketOption option;
    if (!args_ok(info, handle, option_number) || !option_arg(option_number, option)) return Env().Undefined();
    return result(backend_->socket_option(handle, option));
  }

  bool option_arg(int32_t value, SocketOption& out) {
    if (!check(value >= 1 && value <= 3, "unknown socket option")) return false;
    out = static_cast<SocketOption>(value);
    return true;
  }

  Napi::Value shutdown(const Napi::CallbackInfo& info) {
    int32_t handle = 0;
    if (!args_ok(info, handle)) return Env().Undefined();
    return result(backend_->shutdown(handle));
  }

  // closeHandle(handle, reset)
  Napi::Value close_handle(const Napi::CallbackInfo& info) {
    int32_t handle = 0;
    if (!args_ok(info, handle)) return Env().Undefined();
    return result(backend_->close(handle, info.Length() > 1 && info[1].ToBoolean().Value()));
  }

  // address(handle, peer) → { family, address, port } or a negative errno
  Napi::Value address(const Napi::CallbackInfo& info) {
    int32_t handle = 0;
    if (!args_ok(info, handle)) return Env().Undefined();
    SocketAddress out;
    int rc = backend_->address(handle, info.Length() > 1 && info[1].ToBoolean().Value(), out);
    if (rc < 0) return result(rc);
    auto object = Napi::Object::New(Env());
    define_own(object, "family",
               Napi::String::New(Env(), out.family == SocketAddress::Family::kIPv4   ? "IPv4"
                                        : out.family == SocketAddress::Family::kIPv6 ? "IPv6"
                                                                                     : "unix"));
    define_own(object, "address", Napi::String::New(Env(), out.host));
    define_own(object, "port", Napi::Number::New(Env(), out.port));
    return object;
  }

  Napi::Value watch(const Napi::CallbackInfo& info) {
    int32_t handle = 0, interest = 0;
    if (!args_ok(info, handle, interest)) return Env().Undefined();
    return result(backend_->watch(handle, interest_from_bits(static_cast<uint32_t>(interest))));
  }

  // tryRead(handle, buffer[, offset, length]) and tryWrite(…): the whole view, or its bytes
  // [offset, offset + length) — which saves a caller the view per chunk that a subarray() is.
  Napi::Value try_read(const Napi::CallbackInfo& info) {
    int32_t handle = 0;
    std::span<uint8_t> view;
    if (!view_args_ok(info, handle, view) || !range_arg(info, view) || !read_view_ok(view, info.Length() >= 3 ? "length" : "buffer.length")) {
      return Env().Undefined();
    }
    return result(backend_->try_read(handle, view.first(std::min(view.size(), kMaxTransfer))));
  }

  Napi::Value try_write(const Napi::CallbackInfo& info) {
    int32_t handle = 0;
    std::span<uint8_t> view;
    if (!view_args_ok(info, handle, view) || !range_arg(info, view)) return Env().Undefined();
    return result(backend_->try_write(handle, view.first(std::min(view.size(), kMaxTransfer))));
  }

  // Narrows `view` to (offset, length) at info[2] and info[3], when given: checked against the
  // view's real size now, which a caller's own `length` getter may have lied about.
  bool range_arg(const Napi::CallbackInfo& info, std::span<uint8_t>& view) {
    if (info.Length() < 3) return true;
    int64_t offset = -1, length = -1;
    bool numbers = info.Length() >= 4 && napi_get_value_int64(Env(), info[2], &offset) == napi_ok &&
                   napi_get_value_int64(Env(), info[3], &length) == napi_ok;
    if (!check(numbers, "expected an offset and a length")) return false;
    auto size = static_cast<int64_t>(view.size());
    if (!check(offset >= 0 && length >= 0 && offset <= size && length <= size - offset, "offset and length out of the view")) return false;
    view = view.subspan(static_cast<size_t>(offset), static_cast<size_t>(length));
    return true;
  }

  // A socket read of 0 bytes completes with 0, which is what EOF looks like: refused as
  // validateReadBuffer (lib/errors.ts) refuses it, for the view whose bytes are really there now —
  // lib/ looked at its `length` before a getter could shrink it, and a subclass's may lie.
  bool read_view_ok(std::span<uint8_t> view, const char* name) {
    if (!view.empty()) [[likely]] return true;
    throw_empty_read(name);
    return false;
  }
  [[gnu::cold, gnu::noinline]] void throw_empty_read(const char* name) {
    Napi::Env env = Env();
    std::string message = std::string("The value of \"") + name +
                          "\" is out of range. It must be >= 1 (a read of 0 bytes cannot be told from EOF). Received 0";
    Napi::Error error = Napi::RangeError::New(env, message);
    define_own(error.Value(), "code", Napi::String::New(env, "ERR_OUT_OF_RANGE"));
    error.ThrowAsJavaScriptException();
  }

  Napi::Value try_accept(const Napi::CallbackInfo& info) {
    int32_t handle = 0;
    if (!args_ok(info, handle)) return Env().Undefined();
    return result(backend_->try_accept(handle));
  }

  // read(handle, buffer, opId): reads at most 1 GiB.
  Napi::Value submit_read(const Napi::CallbackInfo& info) {
    int32_t handle = 0, op_id = 0;
    std::span<uint8_t> view;
    if (!view_args_ok(info, handle, view, op_id) || !read_view_ok(view, "buffer.length")) return Env().Undefined();
    return submit_leased(info, view, op_id, true, [&](std::span<uint8_t> bytes) { return backend_->submit_read(handle, bytes, op_id); });
  }

  // write(handle, buffer, opId) → 1 when taken at once, 0 when a completion will follow
  Napi::Value submit_write(const Napi::CallbackInfo& info) {
    int32_t handle = 0, op_id = 0;
    std::span<uint8_t> view;
    if (!view_args_ok(info, handle, view, op_id)) return Env().Undefined();
    if (!id_is_free(op_id) || !transfer_ok(view.size())) return Env().Undefined();
    // The backend sends from the caller's view what it can inside the call; only what it keeps
    // for later is copied, into a lease held until the completion. An echo's write on epoll goes
    // out at once, without a block from the pool (~300 instructions).
    Lease lease;
    struct Keeper {
      BytePool& pool;
      Lease& lease;
    } keeper{pool_, lease};
    WriteKeep keep(
        [](void* context, std::span<const uint8_t> rest) -> std::optional<std::span<const uint8_t>> {
          Keeper& to = *static_cast<Keeper*>(context);
          to.lease.bytes = to.pool.copy_of(rest);
          if (!to.lease.bytes) return std::nullopt;  // the backend fails the write with -ENOMEM
          return to.lease.bytes.span();
        },
        &keeper);
    int rc = backend_->submit_write(handle, view, op_id, keep);
    if (rc == 0) leases_.insert(op_id, std::move(lease));
    return result(rc);
  }

  // writeGathered(handle, [buffer…], opId) → as write(): the buffers copied back to back into one
  // block and sent as one write. SocketStream's _writev: a response's head and body go in one
  // send without a JavaScript concatenation, whose fresh buffer per response the GC pays for.
  Napi::Value submit_write_gathered(const Napi::CallbackInfo& info) {
    int32_t handle = 0, op_id = 0;
    if (!args_ok(info, handle) || !check(info[1].IsArray(), "expected (handle, array of views, opId)") || !ints_at(info, 2, op_id)) {
      return Env().Undefined();
    }
    napi_value list = info[1];
    uint32_t length = 0;
    if (!check(napi_get_array_length(Env(), list, &length) == napi_ok, "expected (handle, array of views, opId)")) return Env().Undefined();
    // A bound before allocating: an array's length says nothing of its elements (a sparse one of
    // 2^32 - 1 would be a 32 GiB vector, and a failed allocation aborts with exceptions off).
    if (length > kMaxGatheredViews) {
      Napi::RangeError::New(Env(), "a gathered write takes at most 1 048 576 views").ThrowAsJavaScriptException();
      return Env().Undefined();
    }
    // Every element is fetched before any view is looked at: an element may be an accessor, whose
    // getter is user JavaScript that may shrink, transfer or detach the buffer of an element
    // already seen, and a span taken before it ran would point at freed memory. A getter that
    // throws leaves its exception pending, which goes to the caller as it is (throwing another
    // then is fatal: node-addon-api aborts in napi_throw). The bound's 24 MiB may still be
    // refused, which fails the write (-ENOMEM), as a block the pool cannot have does.
    std::unique_ptr<napi_value[]> elements(new (std::nothrow) napi_value[length]);
    std::unique_ptr<std::span<uint8_t>[]> views(new (std::nothrow) std::span<uint8_t>[length]);
    if (!elements || !views) return result(kENOMEM);
    for (uint32_t i = 0; i < length; ++i) {
      if (napi_get_element(Env(), list, i, &elements[i]) != napi_ok) {
        bool pending = false;
        if (napi_is_exception_pending(Env(), &pending) != napi_ok || !pending) throw_type_error("expected an array of views");
        return Env().Undefined();
      }
    }
    // From here to the copy, nothing calls into JavaScript.
    size_t total = 0;
    for (uint32_t i = 0; i < length; ++i) {
      if (!check(view_of(Env(), elements[i], views[i]), "expected a TypedArray or DataView")) return Env().Undefined();
      total += views[i].size();
    }
    if (!id_is_free(op_id)) return Env().Undefined();
    if (!transfer_ok(total)) return Env().Undefined();
    Lease lease;
    lease.env = Env();
    lease.bytes = pool_.acquire(total);
    return submit_lease(op_id, std::move(lease), false, [&](std::span<uint8_t> bytes) {
      auto out = bytes.begin();
      for (uint32_t i = 0; i < length; ++i) out = std::copy(views[i].begin(), views[i].end(), out);
      return backend_->submit_write(handle, bytes, op_id, WriteKeep::in_place());
    });
  }

  Napi::Value submit_accept(const Napi::CallbackInfo& info) {
    int32_t handle = 0, op_id = 0;
    if (!args_ok(info, handle, op_id)) return Env().Undefined();
    return track(op_id, [&] { return backend_->submit_accept(handle, op_id); });
  }

  // readStart/readStop/acceptStart/acceptStop(handle).
  template <Stream stream, bool on>
  Napi::Value set_streaming(const Napi::CallbackInfo& info) {
    int32_t handle = 0;
    if (!args_ok(info, handle)) return Env().Undefined();
    return result(backend_->set_streaming(handle, stream, on));
  }

  // fileOpen(path, flags, mode, opId): flags as lib/file.ts packs them (kFile* below).
  Napi::Value file_open(const Napi::CallbackInfo& info) {
    int32_t flag_bits = 0, mode = 0, op_id = 0;
    if (!check(backend_ != nullptr, closed_reason_) || !check(info[0].IsString(), "fileOpen(path, flags, mode, opId)") ||
        !ints_at(info, 1, flag_bits, mode, op_id)) {
      return Env().Undefined();
    }
    auto flags = static_cast<uint32_t>(flag_bits);
    FileOpenOptions options;
    options.read = flags & kFileRead;
    options.write = flags & kFileWrite;
    options.create = flags & kFileCreate;
    options.truncate = flags & kFileTruncate;
    options.append = flags & kFileAppend;
    options.exclusive = flags & kFileExclusive;
    options.direct = flags & kFileDirect;
    options.mode = mode;
    std::string path = info[0].As<Napi::String>().Utf8Value();
    // The kernel would open the path only up to a NUL: 'secret\0.txt' is 'secret'.
    if (!check(path.find('\0') == std::string::npos, "path must not contain null bytes")) return Env().Undefined();
    return track(op_id, [&] { return backend_->file_open(path, options, op_id); });
  }

  // fileRead(file, buffer, position, opId) / fileWrite(…): position -1 means the current one.
  Napi::Value file_read(const Napi::CallbackInfo& info) { return file_transfer(info, true); }
  Napi::Value file_write(const Napi::CallbackInfo& info) { return file_transfer(info, false); }

  Napi::Value file_transfer(const Napi::CallbackInfo& info, bool read) {
    int32_t file = 0, op_id = 0;
    std::span<uint8_t> view;
    double position = 0;
    if (!view_args_ok(info, file, view) || !double_at(info, 2, position) || !ints_at(info, 3, op_id)) {
      return Env().Undefined();
    }
    if (!check(position >= -1 && position <= 9007199254740991.0 && position == static_cast<double>(static_cast<int64_t>(position)),
               "position must be an integer >= -1")) {
      return Env().Undefined();
    }
    auto at = static_cast<int64_t>(position);
    // A file write may be short, as pwrite's is (bytesWritten says so): clamped, not refused.
    if (!read) view = view.first(std::min(view.size(), kMaxTransfer));
    return submit_leased(info, view, op_id, read, [&](std::span<uint8_t> bytes) {
      return read ? backend_->file_read(file, bytes, at, op_id) : backend_->file_write(file, bytes, at, op_id);
    });
  }

  // fileSync(file, dataOnly, opId)
  Napi::Value file_sync(const Napi::CallbackInfo& info) {
    int32_t file = 0, op_id = 0;
    if (!args_ok(info, file) || !ints_at(info, 2, op_id)) return Env().Undefined();
    return track(op_id, [&] { return backend_->file_sync(file, info[1].ToBoolean().Value(), op_id); });
  }

  Napi::Value file_close(const Napi::CallbackInfo& info) {
    int32_t file = 0, op_id = 0;
    if (!args_ok(info, file, op_id)) return Env().Undefined();
    return track(op_id, [&] { return backend_->file_close(file, op_id); });
  }

  // fileCancel(file, opId): file -1 for an open. The operation still completes, with -ECANCELED
  // only if it really was cancelled.
  Napi::Value file_cancel(const Napi::CallbackInfo& info) {
    int32_t file = 0, op_id = 0;
    if (!args_ok(info, file, op_id)) return Env().Undefined();
    return result(backend_->file_cancel(file, op_id));
  }

  Napi::Value set_thread_pool_size(const Napi::CallbackInfo& info) {
    int32_t threads = 0;
    if (!args_ok(info, threads)) return Env().Undefined();
    if (!check(threads >= 1 && threads <= 1024, "threads must be 1 to 1024")) return Env().Undefined();
    backend_->set_thread_pool_size(threads);
    return Env().Undefined();
  }

  // cancel(handle, opId): handle -1 for a timer. The operation still completes (with -ECANCELED,
  // or its real result if it finished first), so lib/ keeps its buffer until then.
  Napi::Value cancel(const Napi::CallbackInfo& info) {
    int32_t handle = 0, op_id = 0;
    if (!args_ok(info, handle, op_id)) return Env().Undefined();
    return result(backend_->cancel(handle, op_id));
  }

  // startTimer(delayMs, opId): completes as operation opId with 0 once delayMs have passed.
  Napi::Value start_timer(const Napi::CallbackInfo& info) {
    double delay = 0;
    int32_t op_id = 0;
    if (!check(backend_ != nullptr, closed_reason_) || !double_at(info, 0, delay) || !ints_at(info, 1, op_id)) {
      return Env().Undefined();
    }
    if (!check(delay >= 0 && delay <= 9007199254740991.0, "delayMs must be >= 0")) return Env().Undefined();
    return track(op_id, [&] { return backend_->start_timer(static_cast<uint64_t>(delay), op_id); });
  }

  Napi::Value stats(const Napi::CallbackInfo&) {
    Napi::Env env = Env();
    Stats backend_stats = backend_ ? backend_->stats() : Stats{};
    auto out = Napi::Object::New(env);
    define_own(out, "syscalls", Napi::Number::New(env, static_cast<double>(backend_stats.syscalls)));
    define_own(out, "events", Napi::Number::New(env, static_cast<double>(backend_stats.events)));
    define_own(out, "wakes", Napi::Number::New(env, static_cast<double>(wakes_)));
    // One count, not two: JavaScript is called only to deliver a batch (a wake that drains
    // nothing calls nothing), so a count of JS calls would always equal this one.
    define_own(out, "batches", Napi::Number::New(env, static_cast<double>(batches_)));
    return out;
  }

  // setLiveness(referenced, held): whether the loop keeps Node's process alive (handles open,
  // operations in flight that are not unref'd), and whether it keeps itself alive (anything at
  // all that may still call back). A loop that does neither is collected when unreachable, and
  // its finalizer closes it.
  Napi::Value set_liveness(const Napi::CallbackInfo& info) {
    if (backend_ == nullptr || info.Length() < 2) return Env().Undefined();
    if (info[0].ToBoolean().Value()) watcher_->ref();
    else watcher_->unref();
    bool held = info[1].ToBoolean().Value();
    if (held != held_) {
      held_ = held;
      if (held) dispatch_.Ref();
      else dispatch_.Unref();
    }
    return Env().Undefined();
  }

  Napi::Value close(const Napi::CallbackInfo&) {
    shut_down();
    return Env().Undefined();
  }

  std::shared_ptr<Link> link_ = std::make_shared<Link>(Link{this});  // see bind_methods
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<BatchSink> sink_;
  BytePool pool_;  // before leases_, which give their blocks back to it when destroyed
  LeaseTable leases_;
  napi_async_context async_context_ = nullptr;
  Napi::ObjectReference events_ref_;
  Napi::ObjectReference arena_ref_;
  Napi::FunctionReference dispatch_;
  std::unique_ptr<LoopWatcher> watcher_;
  bool cleanup_hook_added_ = false;
  bool held_ = false;
  std::string fallback_reason_;
  // What the sink writes into, as the constructor found it (see lent_memory_intact).
  std::span<uint8_t> lent_events_, lent_arena_;
  const char* closed_reason_ = "the loop is closed";
  std::string open_error_message_;
  int open_error_ = 0;
  uint64_t wakes_ = 0;
  uint64_t batches_ = 0;  // = calls into JavaScript (see stats())
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
  if (!(size >= 1 && size <= static_cast<double>(twinloop::kMaxTransfer)) || !(alignment >= 8 && alignment <= 65536) ||
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

// The numbers both sides of the boundary use, so that lib/ reads them instead of mirroring them.
static Napi::Object constants(Napi::Env env) {
  using namespace twinloop;
  auto object = [env](std::initializer_list<std::pair<const char*, uint32_t>> entries) {
    auto out = Napi::Object::New(env);
    for (const auto& [name, value] : entries) out.Set(name, value);
    return out;
  };
  auto out = Napi::Object::New(env);
  out.Set("eventKinds", object({{"readable", static_cast<uint32_t>(EventKind::kReadable)},
                                {"writable", static_cast<uint32_t>(EventKind::kWritable)},
                                {"completed", static_cast<uint32_t>(EventKind::kCompleted)},
                                {"data", static_cast<uint32_t>(EventKind::kData)},
                                {"accepted", static_cast<uint32_t>(EventKind::kAccepted)}}));
  out.Set("interest", object({{"readable", static_cast<uint32_t>(Interest::kReadable)},
                              {"writable", static_cast<uint32_t>(Interest::kWritable)}}));
  out.Set("socketOptions", object({{"noDelay", static_cast<uint32_t>(SocketOption::kNoDelay)},
                                   {"keepAlive", static_cast<uint32_t>(SocketOption::kKeepAlive)},
                                   {"keepAliveIdle", static_cast<uint32_t>(SocketOption::kKeepAliveIdle)}}));
  out.Set("fileFlags", object({{"read", kFileRead},
                               {"write", kFileWrite},
                               {"create", kFileCreate},
                               {"truncate", kFileTruncate},
                               {"append", kFileAppend},
                               {"exclusive", kFileExclusive},
                               {"direct", kFileDirect}}));
  // Compiled into this binary, most preferred first (whether each can run here is another matter).
  auto names = Napi::Array::New(env);
  uint32_t i = 0;
  for (const BackendEntry& entry : registered_backends()) names.Set(i++, std::string(entry.name));
  out.Set("backends", names);
  out.Set("handleSlotBits", kHandleSlotBits);
  return out;
}

static Napi::Object init_twinloop(Napi::Env env, Napi::Object exports) {
  using namespace twinloop;
  exports.Set("NativeLoop", NativeLoop::define(env));
  exports.Set("allocAligned", Napi::Function::New(env, alloc_aligned, "allocAligned"));
  exports.Set("constants", constants(env));
  // The few errno values lib/ must recognise, in the numbering the backends return.
  auto errors = Napi::Object::New(env);
  errors.Set("EAGAIN", kEAGAIN);
  errors.Set("ECANCELED", kECANCELED);
  errors.Set("EBADF", kEBADF);
  errors.Set("EFAULT", kEFAULT);  // a read's buffer could no longer hold its bytes
  errors.Set("EMFILE", kEMFILE);
  errors.Set("ENFILE", kENFILE);
  errors.Set("ENOSYS", kENOSYS);      // a backend that cannot work on this host
  errors.Set("ETIMEDOUT", kETIMEDOUT);  // connect and idle timeouts
  exports.Set("errors", errors);
  exports.Set("maxTransfer", static_cast<double>(kMaxTransfer));
  return exports;
}

NODE_API_MODULE(NODE_GYP_MODULE_NAME, init_twinloop)
