// BatchSink (native/core/backend.h) and EventQueue (native/core/event_queue.h): what a drain hands
// JavaScript — events up to the batch size, contiguous streaming reads of one socket coalesced
// into one event, arena space handed out and exhausted, deferred events delivered in order.
#include "../../native/core/event_queue.h"

#include <cstdint>
#include <vector>

#include "../../native/core/backend.h"
#include "check.h"

using twinloop::BatchSink;
using twinloop::Event;
using twinloop::EventKind;
using twinloop::EventQueue;

namespace {

Event data(int32_t handle, int32_t bytes, int32_t offset) { return {handle, EventKind::kData, bytes, offset}; }

}  // namespace

TEST(full_when_every_slot_is_taken) {
  std::vector<Event> events(3);
  std::vector<uint8_t> arena(1 << 16);
  BatchSink sink(events, arena);
  for (int32_t i = 0; i < 3; ++i) {
    CHECK(!sink.full());
    sink.push({i, EventKind::kCompleted, 0, i});
  }
  CHECK(sink.full());
  CHECK_EQ(sink.count(), size_t{3});
  CHECK_EQ(sink.filled()[2].aux, 2);
  sink.reset();
  CHECK(!sink.full());
  CHECK_EQ(sink.count(), size_t{0});
}

TEST(contiguous_reads_of_one_socket_coalesce) {
  std::vector<Event> events(8);
  std::vector<uint8_t> arena(1 << 16);
  BatchSink sink(events, arena);
  sink.push(data(1, 100, 0));
  sink.push(data(1, 50, 100));  // continues the previous bytes
  CHECK_EQ(sink.count(), size_t{1});
  CHECK_EQ(sink.filled()[0].result, 150);
  sink.push(data(1, 10, 200));  // a gap in the arena
  sink.push(data(2, 10, 210));  // another socket
  sink.push(data(2, 0, 220));   // EOF stays its own event
  sink.push(data(2, 10, 220));  // after an EOF: not merged into it
  sink.push(data(3, -104, 0));  // an error
  sink.push(data(3, 5, 0));
  CHECK_EQ(sink.count(), size_t{7});
}

TEST(only_data_events_coalesce) {
  std::vector<Event> events(8);
  std::vector<uint8_t> arena(1 << 16);
  BatchSink sink(events, arena);
  sink.push({1, EventKind::kCompleted, 100, 0});
  sink.push({1, EventKind::kCompleted, 50, 100});
  sink.push(data(1, 100, 0));
  sink.push({1, EventKind::kReadable, 0, 0});
  sink.push(data(1, 100, 100));  // the previous event is not data
  CHECK_EQ(sink.count(), size_t{5});
}

TEST(arena_space_is_bounded_and_runs_out) {
  std::vector<Event> events(8);
  std::vector<uint8_t> arena(10000);
  BatchSink sink(events, arena);
  std::span<uint8_t> space = sink.arena_space(4096);
  CHECK_EQ(space.size(), size_t{4096});
  CHECK(space.data() == arena.data());
  CHECK_EQ(sink.commit_arena(4096), 0);
  space = sink.arena_space(1 << 20);
  CHECK_EQ(space.size(), size_t{10000 - 4096});
  CHECK_EQ(sink.commit_arena(2000), 4096);
  // 3904 bytes left: less than one useful read, so the batch is full.
  CHECK(sink.arena_space(4096).empty());
  CHECK(sink.full());
  sink.reset();
  CHECK(!sink.full());
  CHECK_EQ(sink.arena_space(100000).size(), arena.size());
}

TEST(no_arena_space_once_the_events_are_full) {
  std::vector<Event> events(1);
  std::vector<uint8_t> arena(1 << 16);
  BatchSink sink(events, arena);
  sink.push({1, EventKind::kCompleted, 0, 0});
  CHECK(sink.arena_space(4096).empty());
}

TEST(an_event_queue_delivers_in_order_across_batches) {
  EventQueue queue;
  CHECK(queue.empty());
  for (int32_t i = 0; i < 5; ++i) queue.push({i, EventKind::kCompleted, 0, i});
  std::vector<Event> events(2);
  std::vector<uint8_t> arena(1 << 16);
  BatchSink sink(events, arena);
  std::vector<int32_t> delivered;
  while (!queue.empty()) {
    sink.reset();
    queue.drain_into(sink);
    CHECK(sink.count() >= 1);
    for (const Event& event : sink.filled()) delivered.push_back(event.aux);
  }
  CHECK((delivered == std::vector<int32_t>{0, 1, 2, 3, 4}));
  queue.push({9, EventKind::kCompleted, 0, 9});  // reusable once drained
  sink.reset();
  queue.drain_into(sink);
  CHECK_EQ(sink.count(), size_t{1});
  CHECK(queue.empty());
}
