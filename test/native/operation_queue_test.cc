// SocketOperations' queues (OperationQueue, native/core/socket_operations.h): completing the head
// moves no entry behind it — each completion is O(1), so N queued reads cost O(N), not the O(N^2)
// of a vector's erase(begin()) (audit p22: 160k queued reads, 9.3 s on epoll, 63% in memmove).
// Checked by address, not by clock: an entry that did not move is where it was.
#include "../../native/core/socket_operations.h"

#include <cstdint>
#include <vector>

#include "check.h"

using twinloop::EventOutbox;
using twinloop::QueuedRead;
using twinloop::SocketOperations;

namespace {

constexpr twinloop::HandleId kHandle = 3;

struct Outbox {
  EventOutbox out{[](void*) {}, nullptr};
};

}  // namespace

TEST(completing_the_head_read_moves_none_behind_it) {
  Outbox o;
  SocketOperations ops;
  uint8_t byte = 0;
  for (int32_t i = 0; i < 8; ++i) ops.reads.push_back({{&byte, 1}, i});
  const QueuedRead* second = &ops.reads[1];
  ops.complete_read(kHandle, 1, o.out);
  CHECK(&ops.reads.front() == second);
  CHECK_EQ(ops.reads.front().op_id, 1);
  CHECK_EQ(ops.reads.size(), size_t{7});
}

TEST(finishing_the_head_write_moves_none_behind_it) {
  Outbox o;
  SocketOperations ops;
  uint8_t bytes[4] = {};
  for (int32_t i = 0; i < 8; ++i) ops.writes.push_back({{bytes, 4}, i});
  const twinloop::QueuedWrite* second = &ops.writes[1];
  ops.account_sent(kHandle, 1, 4, o.out);
  CHECK(&ops.writes.front() == second);
  CHECK_EQ(ops.writes.front().op_id, 1);
  ops.fail_head_write(kHandle, twinloop::kENOBUFS, o.out);  // none of it had gone out
  CHECK_EQ(ops.writes.front().op_id, 2);
  CHECK_EQ(ops.writes.size(), size_t{6});
}

TEST(a_queue_drained_and_refilled_many_times_keeps_fifo_order_and_bounded_memory) {
  Outbox o;
  SocketOperations ops;
  uint8_t byte = 0;
  int32_t next_in = 0;
  int32_t next_out = 0;
  // Pushes outpace completions, then completions catch up, over and over: every push that finds
  // the end full either reuses the space the head left or grows.
  for (int round = 0; round < 200; ++round) {
    for (int i = 0; i < 3; ++i) ops.reads.push_back({{&byte, 1}, next_in++});
    for (int i = 0; i < 2; ++i) {
      CHECK_EQ(ops.reads.front().op_id, next_out++);
      ops.complete_read(kHandle, 1, o.out);
    }
  }
  CHECK_EQ(ops.reads.size(), size_t{200});
  for (const QueuedRead& read : ops.reads) CHECK_EQ(read.op_id, next_out++);
  CHECK_EQ(next_out, next_in);
  // Withdrawing a middle one keeps the others' order.
  int32_t middle = ops.reads[100].op_id;
  CHECK(ops.cancel(kHandle, middle, o.out) == twinloop::CancelOutcome::kSettled);
  CHECK_EQ(ops.reads.size(), size_t{199});
  CHECK_EQ(ops.reads[100].op_id, middle + 1);
  CHECK_EQ(ops.reads[99].op_id, middle - 1);
}

TEST(the_queues_cost_a_socket_no_more_than_vectors_did) {
  // uSockets-style budget: an idle connection's operations are 80 bytes, 8 fewer than with std::vector
  // (the accepts, which only a listener fills, are a pointer and a count).
  CHECK_EQ(sizeof(SocketOperations), size_t{80});
  CHECK_EQ(sizeof(twinloop::OperationQueue<QueuedRead>), sizeof(std::vector<QueuedRead>));
}
