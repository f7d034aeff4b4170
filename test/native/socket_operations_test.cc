// SocketOperations (native/core/socket_operations.h) and EventOutbox (native/core/event_outbox.h):
// the rules every backend's sockets follow — what cancel withdraws, tears or leaves to the kernel,
// what close withdraws, how a send's byte count completes the writes it carried, which accept a
// connection goes to — and where their events go, inside a drain and outside it.
#include "../../native/core/socket_operations.h"

#include <cstdint>
#include <vector>

#include "check.h"

using twinloop::BatchSink;
using twinloop::CancelOutcome;
using twinloop::Event;
using twinloop::EventKind;
using twinloop::EventOutbox;
using twinloop::SocketOperations;

namespace {

constexpr twinloop::HandleId kHandle = 7;

// An outbox whose wakes are counted and whose deferred events are read by draining into a batch.
struct Harness {
  int wakes = 0;
  EventOutbox out{[](void* self) { ++static_cast<Harness*>(self)->wakes; }, this};

  std::vector<Event> take() {
    std::vector<Event> events(64);
    std::vector<uint8_t> arena(1 << 14);
    BatchSink sink(events, arena);
    out.begin_drain(sink);
    out.end_drain();
    auto filled = sink.filled();
    return {filled.begin(), filled.end()};
  }
};

std::span<uint8_t> bytes(size_t n) {
  static uint8_t storage[1 << 16];
  return {storage, n};
}

void check_completion(const Event& event, int32_t result, int32_t op_id) {
  CHECK(event.handle == kHandle);
  CHECK(event.kind == EventKind::kCompleted);
  CHECK_EQ(event.result, result);
  CHECK_EQ(event.aux, op_id);
}

}  // namespace

TEST(outbox_posts_into_the_batch_during_a_drain_and_defers_with_a_wake_outside) {
  Harness h;
  h.out.post({1, EventKind::kCompleted, 0, 10});
  CHECK_EQ(h.wakes, 1);
  std::vector<Event> events(2);
  std::vector<uint8_t> arena(1 << 14);
  BatchSink sink(events, arena);
  h.out.begin_drain(sink);
  CHECK_EQ(sink.count(), size_t{1});  // the deferred one first
  h.out.post({1, EventKind::kCompleted, 0, 11});
  CHECK(h.out.full());
  h.out.post({1, EventKind::kCompleted, 0, 12});  // no room: waits for the next drain
  CHECK_EQ(h.wakes, 1);
  h.out.end_drain();
  CHECK_EQ(h.wakes, 2);  // events left over call Node's loop back
  CHECK_EQ(events[0].aux, 10);
  CHECK_EQ(events[1].aux, 11);
  std::vector<Event> next = h.take();
  CHECK_EQ(next.size(), size_t{1});
  CHECK_EQ(next[0].aux, 12);
  CHECK_EQ(h.out.events(), uint64_t{3});
}

TEST(cancel_withdraws_what_the_kernel_does_not_hold) {
  Harness h;
  SocketOperations s;
  s.reads.push_back({bytes(10), 1});
  s.reads.push_back({bytes(10), 2});
  s.reads_held = 1;
  CHECK(s.cancel(kHandle, 2, h.out) == CancelOutcome::kSettled);
  CHECK(s.cancel(kHandle, 1, h.out) == CancelOutcome::kRecallRead);
  CHECK(s.reads.size() == 1 && s.reads[0].cancelled);
  CHECK(s.cancel(kHandle, 99, h.out) == CancelOutcome::kNotFound);
  std::vector<Event> events = h.take();
  CHECK_EQ(events.size(), size_t{1});
  check_completion(events[0], twinloop::kECANCELED, 2);
}

TEST(cancel_of_a_half_sent_write_tears_the_stream) {
  Harness h;
  SocketOperations s;
  s.writes.push_back({bytes(100), 1});
  s.writes.push_back({bytes(100), 2});
  s.writes.push_back({bytes(100), 3});
  s.account_sent(kHandle, 1, 40, h.out);  // the head is half-sent
  CHECK_EQ(s.writes[0].sent, size_t{40});
  CHECK(s.cancel(kHandle, 1, h.out) == CancelOutcome::kSettled);
  CHECK(s.writes.empty());
  CHECK(s.write_torn);
  CHECK_EQ(s.check_write(), twinloop::kEPIPE);
  std::vector<Event> events = h.take();
  CHECK_EQ(events.size(), size_t{3});
  check_completion(events[0], 40, 1);
  check_completion(events[1], twinloop::kECANCELED, 2);
  check_completion(events[2], twinloop::kECANCELED, 3);
}

TEST(a_write_the_kernel_holds_settles_once_it_lets_go) {
  Harness h;
  SocketOperations s;
  s.writes.push_back({bytes(100), 1});
  s.writes.push_back({bytes(100), 2});
  s.writes_held = 2;
  CHECK(s.cancel(kHandle, 2, h.out) == CancelOutcome::kRecallWrite);
  // The send comes back having sent the first write and none of the second.
  s.writes_held = 0;
  s.account_sent(kHandle, 2, 100, h.out);
  s.settle_cancelled_writes(kHandle, h.out);
  CHECK(s.writes.empty());
  CHECK(!s.write_torn);
  std::vector<Event> events = h.take();
  CHECK_EQ(events.size(), size_t{2});
  check_completion(events[0], 0, 1);
  check_completion(events[1], twinloop::kECANCELED, 2);
}

TEST(a_short_send_keeps_the_rest_at_the_head) {
  Harness h;
  SocketOperations s;
  s.writes.push_back({bytes(10), 1});
  s.writes.push_back({bytes(10), 2});
  s.account_sent(kHandle, 2, 15, h.out);
  CHECK_EQ(s.writes.size(), size_t{1});
  CHECK_EQ(s.writes[0].rest.size(), size_t{5});
  CHECK_EQ(s.writes[0].sent, size_t{5});
  s.fail_writes(kHandle, twinloop::kECONNRESET, h.out);
  std::vector<Event> events = h.take();
  CHECK_EQ(events.size(), size_t{2});
  check_completion(events[0], 0, 1);
  check_completion(events[1], twinloop::kECONNRESET, 2);
}

TEST(a_write_that_fails_before_any_byte_went_out_leaves_the_writes_behind_it_queued) {
  Harness h;
  SocketOperations s;
  s.writes.push_back({bytes(10), 1});
  s.writes.push_back({bytes(10), 2});
  s.fail_head_write(kHandle, twinloop::kENOBUFS, h.out);
  CHECK_EQ(s.writes.size(), size_t{1});
  CHECK_EQ(s.writes[0].op_id, 2);
  CHECK(!s.write_torn);
  std::vector<Event> events = h.take();
  CHECK_EQ(events.size(), size_t{1});
  check_completion(events[0], twinloop::kENOBUFS, 1);
}

TEST(a_write_that_fails_half_sent_tears_the_stream) {
  // The peer has a prefix of write 1: write 2's bytes must not follow it, nor any later write's.
  Harness h;
  SocketOperations s;
  s.writes.push_back({bytes(10), 1});
  s.writes.push_back({bytes(10), 2});
  s.account_sent(kHandle, 1, 4, h.out);
  s.fail_head_write(kHandle, twinloop::kENOBUFS, h.out);
  CHECK(s.writes.empty());
  CHECK(s.write_torn);
  CHECK_EQ(s.check_write(), twinloop::kEPIPE);
  std::vector<Event> events = h.take();
  CHECK_EQ(events.size(), size_t{2});
  check_completion(events[0], twinloop::kENOBUFS, 1);
  check_completion(events[1], twinloop::kENOBUFS, 2);
}

TEST(a_write_that_cannot_be_started_after_a_speculative_prefix_tears_the_stream) {
  SocketOperations whole;
  whole.writes.push_back({bytes(10), 1});
  whole.unqueue_last_write();
  CHECK(whole.writes.empty());
  CHECK_EQ(whole.check_write(), 0);  // nothing of it went out: the next write may go
  SocketOperations torn;
  torn.writes.push_back({bytes(6), 1, 4});  // 4 bytes went out inside the call
  torn.unqueue_last_write();
  CHECK(torn.writes.empty());
  CHECK_EQ(torn.check_write(), twinloop::kEPIPE);
}

TEST(a_write_whose_bytes_cannot_be_kept_fails_with_enomem_and_tears_the_stream_only_after_a_prefix) {
  twinloop::WriteKeep no_memory([](void*, std::span<const uint8_t>) -> std::optional<std::span<const uint8_t>> { return std::nullopt; },
                                nullptr);
  SocketOperations whole;
  CHECK_EQ(whole.queue_write(bytes(10), 1, 0, no_memory), twinloop::kENOMEM);
  CHECK(whole.writes.empty());
  CHECK_EQ(whole.check_write(), 0);  // nothing of it went out: the next write may go
  CHECK_EQ(whole.queue_write(bytes(10), 2, 0, twinloop::WriteKeep::in_place()), 0);
  CHECK_EQ(whole.writes.size(), size_t{1});
  CHECK(whole.writes.front().rest.data() == bytes(10).data());
  SocketOperations torn;
  CHECK_EQ(torn.queue_write(bytes(6), 1, 4, no_memory), twinloop::kENOMEM);  // 4 bytes went out inside the call
  CHECK(torn.writes.empty());
  CHECK_EQ(torn.check_write(), twinloop::kEPIPE);
}

TEST(close_withdraws_every_operation_the_kernel_does_not_hold) {
  Harness h;
  SocketOperations s;
  s.reads.push_back({bytes(10), 1});
  s.reads.push_back({bytes(10), 2});
  s.writes.push_back({bytes(10), 3});
  s.reads_held = 1;
  CHECK(s.withdraw_unheld(kHandle, h.out));
  CHECK_EQ(s.reads.size(), size_t{1});
  CHECK(s.writes.empty());
  std::vector<Event> events = h.take();
  CHECK_EQ(events.size(), size_t{2});
  check_completion(events[0], twinloop::kECANCELED, 2);
  check_completion(events[1], twinloop::kECANCELED, 3);
  SocketOperations idle;
  idle.connect_op = 4;
  CHECK(!idle.withdraw_unheld(kHandle, h.out));
  CHECK_EQ(idle.connect_op, -1);
}

TEST(a_connection_goes_to_the_oldest_accept_still_wanted) {
  Harness h;
  SocketOperations s;
  s.listener = true;
  s.accepts.push_back({1});
  s.accepts.push_back({2});
  s.accepts_held = 2;
  CHECK(s.cancel(kHandle, 1, h.out) == CancelOutcome::kRecallAccept);
  CHECK_EQ(s.take_accept(false), 2);                       // a connection skips the cancelled one
  CHECK_EQ(s.take_accept(true), 1);                        // the kernel's -ECANCELED goes to it
  CHECK_EQ(s.take_accept(false), -1);
  s.accepts.push_back({3, true});
  CHECK_EQ(s.take_accept(false), 3);                       // never dropped: all were cancelled
  s.accepts.push_back({4, true});
  s.accepts.push_back({5});
  s.settle_cancelled_accepts(kHandle, h.out);
  CHECK_EQ(s.accepts.size(), size_t{1});
  std::vector<Event> events = h.take();
  CHECK_EQ(events.size(), size_t{1});
  check_completion(events[0], twinloop::kECANCELED, 4);
}

TEST(streaming_and_submission_rules) {
  SocketOperations s;
  CHECK_EQ(s.set_streaming(twinloop::Stream::kAccept, true), twinloop::kEINVAL);
  s.reads.push_back({bytes(1), 1});
  CHECK_EQ(s.set_streaming(twinloop::Stream::kRead, true), twinloop::kEBUSY);
  s.reads.clear();
  CHECK_EQ(s.set_streaming(twinloop::Stream::kRead, true), 0);
  CHECK_EQ(s.set_streaming(twinloop::Stream::kRead, false), 0);
  CHECK_EQ(s.check_read(), twinloop::kEBUSY);  // the stream owns the reads for good
  CHECK_EQ(s.check_accept(), twinloop::kEINVAL);
  s.connect_op = 3;
  CHECK_EQ(s.check_write(), twinloop::kENOTCONN);
}

