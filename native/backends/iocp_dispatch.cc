// From the completion port to events. The waiting thread moves each batch of completions off the
// port; drain(), on the JavaScript thread, turns every completion into events by the kind of its
// operation, then serves the sockets listed for attention (streamed data, accepted connections,
// readiness). The design is described in iocp.cc.
#include "iocp_backend.h"

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

namespace twinloop::iocp {

DWORD WINAPI IocpBackend::wait_loop(void* self) {
  static_cast<IocpBackend*>(self)->wait_for_completions();
  return 0;
}

void IocpBackend::wait_for_completions() {
  OVERLAPPED_ENTRY entries[kMaxKernelEvents];
  for (;;) {
    bool due = false;
    DWORD timeout = timers_.next_timeout(due);
    if (due) request_wake();
    ULONG count = 0;
    if (!GetQueuedCompletionStatusEx(port_.get(), entries, kMaxKernelEvents, &count, timeout, FALSE)) {
      if (GetLastError() == ERROR_ABANDONED_WAIT_0) return;  // the port was closed
      continue;  // WAIT_TIMEOUT: next_timeout() says whether a timer is due, or how long is left
    }
    bool stop = false;
    bool any = false;
    {
      LockGuard guard(lock_);
      for (ULONG i = 0; i < count; ++i) {
        if (entries[i].lpOverlapped == nullptr) {  // a stop or a timer wake packet
          stop = stop || key_of(entries[i]) == CompletionKey::kStop;
          continue;
        }
        completed_.push_back(entries[i]);
        any = true;
      }
    }
    if (any) request_wake();
    if (stop) return;
  }
}

// Either thread. One wake per batch: the flag stays set until drain() has taken the batch.
void IocpBackend::request_wake() {
  void (*wake)(void*) = wake_.load();
  if (wake != nullptr && !wake_pending_.exchange(true)) wake(wake_context_);
}

void IocpBackend::drain(BatchSink& sink) {
  // Cleared before the completions are taken: one that arrives after the swap wakes us again.
  wake_pending_.store(false);
  outbox_.begin_drain(sink);
  rearm();
  {
    LockGuard guard(lock_);
    std::swap(ready_, completed_);
  }
  for (const OVERLAPPED_ENTRY& entry : ready_) complete(entry);
  ready_.clear();
  timers_.pop_expired([&](int32_t op_id) { outbox_.post({-1, EventKind::kCompleted, 0, op_id}); });
  // Sockets served now that still have something to report go to the back of the list, for the
  // next drain: one busy socket cannot fill every batch.
  serving_.swap(attention_);
  for (HandleId handle : serving_) {
    if (Socket* s = sockets_.find(handle); s != nullptr) s->in_attention = false;
  }
  for (HandleId handle : serving_) serve(handle);
  serving_.clear();
  outbox_.end_drain();
  if (!attention_.empty()) request_wake();
}

// Called after JavaScript has handled a batch: readiness it reported is checked again now, so a
// socket that is still ready is reported again (level triggering).
void IocpBackend::flush() {
  rearm();
  if (!attention_.empty()) request_wake();
}

// The error of a completed operation: the completion carries an NTSTATUS, WSAGetOverlappedResult
// turns it into the Winsock error the rest of the table speaks.
int IocpBackend::operation_error(const Socket& s, Operation* op) {
  DWORD bytes = 0;
  DWORD flags = 0;
  if (WSAGetOverlappedResult(s.socket.get(), &op->overlapped, &bytes, FALSE, &flags)) return 0;
  return last_socket_error();
}

void IocpBackend::complete(const OVERLAPPED_ENTRY& entry) {
  if (key_of(entry) == CompletionKey::kFile) {
    outbox_.post(files_.complete(entry));
    return;
  }
  auto* op = reinterpret_cast<Operation*>(entry.lpOverlapped);
  if (op->orphaned) {
    if (op->kind == OpKind::kSend) {
      for (int32_t op_id : op->carried) outbox_.post({op->handle, EventKind::kCompleted, kECANCELED, op_id});
    } else if (op->op_id >= 0) {
      outbox_.post({op->handle, EventKind::kCompleted, kECANCELED, op->op_id});
    }
    release(op);
    return;
  }
  HandleId handle = op->handle;
  Socket* s = sockets_.find(handle);
  bool ok = static_cast<LONG>(op->overlapped.Internal) >= 0;  // NT_SUCCESS
  int error = ok ? 0 : operation_error(*s, op);
  if (!ok && error == 0) error = kUNKNOWN;
  auto bytes = static_cast<size_t>(entry.dwNumberOfBytesTransferred);
  switch (op->kind) {
    case OpKind::kPoll:
      s->poll = nullptr;
      s->readable = true;
      if (error != 0) s->read_error = error;
      release(op);
      update(handle, *s);
      break;
    case OpKind::kRecv: {
      s->recv = nullptr;
      s->reads_held = 0;
      bool filled = ok && !s->reads.empty() && bytes > 0 && bytes == std::min(s->reads.front().buffer.size(), kMaxTransfer);
      s->complete_read(handle, ok ? static_cast<int>(bytes) : error, outbox_);
      release(op);
      post_reads(handle, *s, filled);
      update(handle, *s);
      break;
    }
    case OpKind::kSend:
      complete_send(handle, *s, op, ok ? 0 : error, bytes);
      break;
    case OpKind::kConnect:
      s->connect = nullptr;
      s->connect_op = -1;
      s->connect_held = false;
      if (ok) {
        // Without it the socket does not know it is connected: getpeername and shutdown fail.
        setsockopt(s->socket.get(), SOL_SOCKET, SO_UPDATE_CONNECT_CONTEXT, nullptr, 0);
        s->connected = true;
      }
      outbox_.post({handle, EventKind::kCompleted, error, op->op_id});
      release(op);
      update(handle, *s);
      break;
    case OpKind::kAccept:
      complete_accept(handle, *s, op, error);
      break;
  }
}

void IocpBackend::complete_send(HandleId handle, Socket& s, Operation* op, int error, size_t bytes) {
  size_t carried = s.writes_held;
  s.send = nullptr;
  s.writes_held = 0;
  if (op->op_id < 0) {
    complete_staged_send(s, op, error, bytes);
    post_writes(handle, s);
    update(handle, s);
    return;
  }
  // A send the kernel gave back cancelled still reports the bytes that went out before. Under
  // wine that count is 0 and nothing went out after the send buffer filled (the speculative
  // prefix in `sent` is what the peer gets, as the torn-write test checks); on Windows, whose
  // AFD may send straight from the caller's pages, it is the kernel's word, untested here.
  bool counted = error == 0 || error == kECANCELED;
  bool recalled = std::any_of(s.writes.begin(), s.writes.begin() + std::min(carried, s.writes.size()),
                              [](const QueuedWrite& write) { return write.cancelled; });
  if (counted) s.account_sent(handle, carried, bytes, outbox_);
  if (error == 0 || (error == kECANCELED && recalled)) {
    // Writes whose cancel() came while the kernel held them: withdrawn whole, or torn (see
    // Backend::cancel). What a short send, or the recall, left of the others goes in the next.
    if (recalled) s.settle_cancelled_writes(handle, outbox_);
  } else if (!s.writes.empty()) {
    s.fail_head_write(handle, error, outbox_);
    // The kernel holds none of them now: one cancelled behind the head must not be sent again.
    if (recalled) s.settle_cancelled_writes(handle, outbox_);
  }
  release(op);
  post_writes(handle, s);
  update(handle, s);
}

// try_write's own send: nobody waits for it, so an error waits for the next write.
void IocpBackend::complete_staged_send(Socket& s, Operation* op, int error, size_t bytes) {
  if (error == 0 || error == kECANCELED) {
    op->rest = op->rest.subspan(std::min(bytes, op->rest.size()));
    if (op->rest.empty()) error = 0;
  }
  if (error == 0 && !op->rest.empty()) {
    error = post_send(s, op, op->rest);
    if (error == 0) return;
  }
  if (error != 0) s.write_error = error;
  release(op);
}

void IocpBackend::complete_accept(HandleId handle, Socket& listener, Operation* op, int error) {
  listener.accepting.erase(std::find(listener.accepting.begin(), listener.accepting.end(), op));
  if (error == 0) {
    // Gives the accepted socket its listener's properties; getpeername and shutdown need it.
    SOCKET listen_socket = listener.socket.get();
    setsockopt(op->accepted.get(), SOL_SOCKET, SO_UPDATE_ACCEPT_CONTEXT, reinterpret_cast<const char*>(&listen_socket),
               sizeof(listen_socket));
    listener.backlog.push_back(std::move(op->accepted));
  } else if (op->cancelled) {
    // Withdrawn by cancel(): nobody waits for it, and release() closes its accept socket.
  } else if (error != kECONNRESET && error != kECONNABORTED) {
    // A peer that gave up before we accepted is skipped, as accept(2) does; anything else goes to
    // whoever waits for a connection.
    if (int32_t op_id = listener.take_accept(false); op_id >= 0) {
      outbox_.post({handle, EventKind::kCompleted, error, op_id});
    } else if (listener.streaming_accept) {
      outbox_.post({handle, EventKind::kAccepted, error, 0});
      listener.streaming_accept = false;
    }
  }
  release(op);
  update_listener(handle);
}

// Reports what a socket listed for attention has: streamed data, accepted connections,
// readiness.
void IocpBackend::serve(HandleId handle) {
  Socket* s = sockets_.find(handle);
  if (s == nullptr) return;
  if (s->listener) {
    serve_listener(handle);
    return;
  }
  if (s->streaming_read && (s->readable || s->read_error != 0)) stream_read(handle, *s);
  if (has(s->watched, Interest::kReadable) && (s->readable || s->read_error != 0)) {
    outbox_.post({handle, EventKind::kReadable, 0, 0});
    s->readable = false;
    schedule_rearm(handle, *s);
  }
  if (has(s->watched, Interest::kWritable) && (writable(*s) || s->write_error != 0)) {
    outbox_.post({handle, EventKind::kWritable, 0, 0});
    schedule_rearm(handle, *s);
  }
}

void IocpBackend::stream_read(HandleId handle, Socket& s) {
  std::span<uint8_t> space = outbox_.sink()->arena_space(kMaxStreamRead);
  if (space.empty()) {  // the batch is full of data: the next drain continues
    need_attention(handle, s);
    return;
  }
  int n = s.read_error != 0 ? std::exchange(s.read_error, 0) : recv_some(s, space);
  if (n == kEAGAIN) {
    s.readable = false;
    update(handle, s);
    return;
  }
  int32_t offset = n > 0 ? outbox_.sink()->commit_arena(static_cast<size_t>(n)) : 0;
  outbox_.post({handle, EventKind::kData, n, offset});
  if (n <= 0) {
    s.streaming_read = false;  // after EOF or an error the socket stays readable for ever
  } else if (static_cast<size_t>(n) == space.size()) {
    need_attention(handle, s);  // there may be more: read again in the next drain
  } else {
    // Short read: the socket is most likely empty. The zero-byte read says so for certain, and
    // completes at once if it is not.
    s.readable = false;
    update(handle, s);
  }
}

void IocpBackend::serve_listener(HandleId handle) {
  Socket* s = sockets_.find(handle);
  while (!s->backlog.empty() && (!s->accepts.empty() || s->streaming_accept)) {
    if (outbox_.full()) {
      need_attention(handle, *s);
      return;
    }
    int result = adopt_connection(take_backlog(*s));
    s = sockets_.find(handle);  // inserting may have moved it
    if (int32_t op_id = s->take_accept(false); op_id >= 0) {
      outbox_.post({handle, EventKind::kCompleted, result, op_id});
    } else {
      outbox_.post({handle, EventKind::kAccepted, result, 0});
    }
  }
  if (has(s->watched, Interest::kReadable) && !s->backlog.empty()) {
    outbox_.post({handle, EventKind::kReadable, 0, 0});
    schedule_rearm(handle, *s);
  }
  update_listener(handle);
}

}  // namespace twinloop::iocp
