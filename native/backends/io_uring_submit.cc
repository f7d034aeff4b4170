// The submission side. An API call only records what a socket wants and lists it as dirty; pump()
// turns that into SQEs just before an io_uring_enter (flush(), or the start of drain()): reads,
// sends (one SENDMSG for a batch's writes), accepts, polls, connects. Cancels and the timers'
// TIMEOUT are prepared here too. The design is described in io_uring.cc.
#include "io_uring_backend.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <memory>
#include <utility>

namespace twinloop::iouring {
namespace {

// Accepts of one listener the kernel holds at once. A server posts many (as IOCP servers post many
// AcceptEx) so that a burst is taken in one pass; held one at a time, each accept's CQE queued
// behind a busy loop's whole backlog, and the last ~200 of 10 000 clients waited seconds.
constexpr uint8_t kMaxAcceptsInFlight = 64;
constexpr uint32_t kAcceptFlags = SOCK_NONBLOCK | SOCK_CLOEXEC;

uint32_t poll_events(Interest interest) {
  return (has(interest, Interest::kReadable) ? POLLIN | POLLRDHUP : 0) | (has(interest, Interest::kWritable) ? POLLOUT : 0);
}

}  // namespace

void IoUringBackend::flush() {
  pump_dirty();
  if (ring_.pending() > 0) enter(false);
}

int IoUringBackend::enter(bool get_events) {
  ++stats_.syscalls;
  return ring_.enter(get_events);
}

void IoUringBackend::submit() { enter(false); }

io_uring_sqe* IoUringBackend::sqe() {
  io_uring_sqe* entry = ring_.get_sqe();
  if (entry == nullptr) {
    // SQ full: hand the kernel what is there and carry on.
    submit();
    entry = ring_.get_sqe();
  }
  return entry;  // null only if the kernel took nothing (then pump() retries at the next enter)
}

// The kernel holds the operation from here until its final CQE (let_go).
void IoUringBackend::start(HandleId handle, Socket& s, Tag kind, io_uring_sqe* entry) {
  set_tag(entry, user_data(kind, handle));
  s.in_flight |= kind;
  ++in_flight_ops_;
  if (kind == kRecv) s.reads_held = 1;
  if (kind == kAccept) ++s.accepts_held;
  if (kind == kConnect) s.connect_held = true;
}

void IoUringBackend::recall(HandleId handle, Socket& s, Tag kind) {
  if (!(s.cancelling & kind)) cancel(handle, s, kind);
}

// Every operation of `kind` the socket has in flight (several only for kAccept).
void IoUringBackend::cancel(HandleId handle, Socket& s, Tag kind) {
  io_uring_sqe* entry = sqe();
  if (entry == nullptr) return;
  prep_cancel(entry, user_data(kind, handle), IORING_ASYNC_CANCEL_ALL);
  set_tag(entry, tag(kIgnore));
  s.cancelling |= kind;
}

void IoUringBackend::arm_timer() {
  if (timers_.arm([this] { return sqe(); })) ++in_flight_ops_;
}

void IoUringBackend::pump_dirty() {
  // pump() may dirty sockets again (it cannot, today, but a swap keeps that safe).
  pumping_.swap(dirty_);
  for (HandleId handle : pumping_) {
    Socket* s = sockets_.find(handle);
    if (s == nullptr) continue;
    s->dirty = false;
    if (!s->closing) pump(handle, *s);
  }
  pumping_.clear();
}

// Turns what the socket wants into SQEs for what is not in flight yet.
void IoUringBackend::pump(HandleId handle, Socket& s) {
  int fd = s.fd.get();
  if (s.connect_op >= 0) {
    if (!(s.in_flight & kConnect)) {
      io_uring_sqe* entry = sqe();
      if (entry == nullptr) return requeue(handle, s);
      prep_connect(entry, fd, s.connect_address->get(), s.connect_address->length);
      start(handle, s, kConnect, entry);
    }
    return;
  }
  if (s.listener) {
    pump_accepts(handle, s);
  } else {
    pump_reads(handle, s);
    if (!s.writes.empty() && !(s.in_flight & kSend)) start_send(handle, s);
  }
  pump_poll(handle, s);
}

void IoUringBackend::requeue(HandleId handle, Socket& s) { mark_dirty(handle, s); }

void IoUringBackend::pump_reads(HandleId handle, Socket& s) {
  bool reading = s.in_flight & (kRecv | kRecvStream);
  if (!s.reads.empty() && !reading) {
    io_uring_sqe* entry = sqe();
    if (entry == nullptr) return requeue(handle, s);
    std::span<uint8_t> buffer = s.reads.front().buffer;
    prep_recv(entry, s.fd.get(), buffer.first(clamp(buffer.size())));
    start(handle, s, kRecv, entry);
  } else if (s.streaming_read && !reading) {
    io_uring_sqe* entry = sqe();
    if (entry == nullptr) return requeue(handle, s);
    prep_recv_select(entry, s.fd.get(), BufferRing::kGroup,
                     ring_.features().multishot_recv ? IORING_RECV_MULTISHOT : 0);
    start(handle, s, kRecvStream, entry);
  } else if (!s.streaming_read && (s.in_flight & kRecvStream) && !(s.cancelling & kRecvStream)) {
    cancel(handle, s, kRecvStream);
  }
}

void IoUringBackend::pump_accepts(HandleId handle, Socket& s) {
  while (!(s.cancelling & kAccept) && s.accepts_held < std::min<size_t>(s.accepts.size(), kMaxAcceptsInFlight)) {
    io_uring_sqe* entry = sqe();
    if (entry == nullptr) return requeue(handle, s);
    prep_accept(entry, s.fd.get(), kAcceptFlags, false);
    start(handle, s, kAccept, entry);
  }
  if (s.streaming_accept && !(s.in_flight & kAcceptStream)) {
    io_uring_sqe* entry = sqe();
    if (entry == nullptr) return requeue(handle, s);
    prep_accept(entry, s.fd.get(), kAcceptFlags, ring_.features().multishot_accept);
    start(handle, s, kAcceptStream, entry);
  } else if (!s.streaming_accept && (s.in_flight & kAcceptStream) && !(s.cancelling & kAcceptStream)) {
    cancel(handle, s, kAcceptStream);
  }
}

// The reactor, emulated. A multishot poll reports *changes* (each wakeup of the socket), not
// levels: data left unread after a kReadable would never be reported again, and a handler that
// reads in small pieces would hang. epoll's level-triggered contract is kept by re-checking:
// each reported readiness sets `recheck` until the handler's own try_read/try_write shows the
// socket went dry (EAGAIN or a short transfer); if it did not, a one-shot POLL_ADD goes out with
// the batch's enter, completes at once if the socket is still ready, and reports it again on
// the next drain. A handler that drains the socket costs nothing extra.
//
// The multishot poll always asks for both directions, and interest is filtered here: changing
// its mask in place (IORING_POLL_UPDATE_EVENTS) fails with EALREADY whenever a wakeup is being
// processed — seen here with a reactor echo flipping readable/writable per message, which then
// hung — and removing and re-adding it costs a round trip per flip. Asking for POLLOUT costs
// little: TCP wakes writers only after a send found the buffer full (SOCK_NOSPACE). As the poll
// is edge-like, an interest that watch() adds is checked at once with the one-shot poll.
void IoUringBackend::pump_poll(HandleId handle, Socket& s) {
  if (s.watched != Interest::kNone && !(s.in_flight & kPoll)) {
    io_uring_sqe* entry = sqe();
    if (entry == nullptr) return requeue(handle, s);
    prep_poll_add(entry, s.fd.get(), poll_events(Interest::kBoth), true);
    start(handle, s, kPoll, entry);
  } else if (s.watched == Interest::kNone && (s.in_flight & kPoll) && !(s.cancelling & kPoll)) {
    cancel(handle, s, kPoll);  // re-armed, if watched again, once its last CQE is in
  }
  Interest check = s.recheck & s.watched;
  if (check != Interest::kNone && !(s.in_flight & kPollCheck)) {
    io_uring_sqe* entry = sqe();
    if (entry == nullptr) return requeue(handle, s);
    prep_poll_add(entry, s.fd.get(), poll_events(check), false);
    start(handle, s, kPollCheck, entry);
    s.recheck = Interest::kNone;
  }
}

void IoUringBackend::start_send(HandleId handle, Socket& s) {
  io_uring_sqe* entry = sqe();
  if (entry == nullptr) return requeue(handle, s);
  size_t count = std::min(s.writes.size(), kMaxIov);
  // MSG_WAITALL: the kernel itself continues a short send on a stream socket (5.19+), so a big
  // write usually completes in one CQE; a short result is still continued here.
  // MSG_NOSIGNAL: a vanished peer is EPIPE, not a SIGPIPE that kills Node.
  constexpr uint32_t kSendFlags = MSG_NOSIGNAL | MSG_WAITALL;
  if (count == 1) {
    std::span<const uint8_t> rest = s.writes.front().rest;
    prep_send(entry, s.fd.get(), rest.first(clamp(rest.size())), kSendFlags);
  } else {
    if (!s.send_batch) s.send_batch = take_batch();
    SendBatch& batch = *s.send_batch;
    for (size_t i = 0; i < count; ++i) {
      std::span<const uint8_t> rest = s.writes[i].rest;
      batch.iov[i] = {const_cast<uint8_t*>(rest.data()), rest.size()};
    }
    batch.header = {};
    batch.header.msg_iov = batch.iov;
    batch.header.msg_iovlen = count;
    prep_sendmsg(entry, s.fd.get(), &batch.header, kSendFlags);
  }
  s.writes_held = static_cast<uint8_t>(count);
  start(handle, s, kSend, entry);
}

std::unique_ptr<SendBatch> IoUringBackend::take_batch() {
  if (spare_batches_.empty()) return std::make_unique<SendBatch>();
  auto batch = std::move(spare_batches_.back());
  spare_batches_.pop_back();
  return batch;
}

void IoUringBackend::release_batch(Socket& s) {
  if (s.send_batch) spare_batches_.push_back(std::move(s.send_batch));
}

}  // namespace twinloop::iouring
