// TimerHeap (native/core/timer_heap.h): deadline order, start order among equal deadlines, and
// cancellation from any position, checked against a plain sorted model.
#include "../../native/core/timer_heap.h"

#include <algorithm>
#include <cstdint>
#include <random>
#include <tuple>
#include <vector>

#include "check.h"

using twinloop::TimerHeap;

namespace {

std::vector<int32_t> fire_all(TimerHeap& heap, uint64_t now) {
  std::vector<int32_t> fired;
  heap.pop_expired(now, [&](int32_t op_id) { fired.push_back(op_id); });
  return fired;
}

}  // namespace

TEST(earliest_deadline_first_and_start_order_among_equals) {
  TimerHeap heap;
  CHECK(heap.empty());
  CHECK(heap.push(30, 1));
  CHECK(heap.push(10, 2));
  CHECK(heap.push(20, 3));
  CHECK(heap.push(10, 4));  // same deadline as 2, started later
  CHECK_EQ(heap.size(), size_t{4});
  CHECK_EQ(heap.earliest(), uint64_t{10});
  CHECK(fire_all(heap, 9).empty());
  CHECK((fire_all(heap, 20) == std::vector<int32_t>{2, 4, 3}));
  CHECK_EQ(heap.earliest(), uint64_t{30});
  CHECK((fire_all(heap, UINT64_MAX) == std::vector<int32_t>{1}));
  CHECK(heap.empty());
}

TEST(an_id_is_pending_once) {
  TimerHeap heap;
  CHECK(heap.push(5, 7));
  CHECK(!heap.push(1, 7));
  CHECK_EQ(heap.earliest(), uint64_t{5});
  CHECK(heap.contains(7));
  fire_all(heap, 5);
  CHECK(!heap.contains(7));
  CHECK(heap.push(1, 7));  // free again once fired
}

TEST(cancel_removes_only_what_is_pending) {
  TimerHeap heap;
  CHECK(!heap.cancel(1));
  for (int32_t id = 0; id < 8; ++id) CHECK(heap.push(static_cast<uint64_t>(100 - id), id));
  CHECK(heap.cancel(7));  // the root
  CHECK(heap.cancel(0));  // the last leaf
  CHECK(heap.cancel(3));  // the middle
  CHECK(!heap.cancel(3));
  CHECK_EQ(heap.earliest(), uint64_t{94});
  CHECK((fire_all(heap, UINT64_MAX) == std::vector<int32_t>{6, 5, 4, 2, 1}));
}

TEST(random_pushes_and_cancels_fire_as_a_sorted_model_says) {
  std::mt19937 random(15);
  TimerHeap heap;
  // (deadline, start sequence, id): the order the heap promises.
  std::vector<std::tuple<uint64_t, int, int32_t>> model;
  int sequence = 0;
  for (int32_t id = 0; id < 5000; ++id) {
    uint64_t deadline = random() % 500;  // many equal deadlines
    CHECK(heap.push(deadline, id));
    model.emplace_back(deadline, sequence++, id);
    if (random() % 3 == 0) {
      auto victim = model.begin() + static_cast<std::ptrdiff_t>(random() % model.size());
      CHECK(heap.cancel(std::get<2>(*victim)));
      model.erase(victim);
    }
  }
  std::sort(model.begin(), model.end());
  CHECK_EQ(heap.size(), model.size());
  std::vector<int32_t> expected;
  for (const auto& entry : model) expected.push_back(std::get<2>(entry));
  // Fired in steps, as a loop's drains would.
  std::vector<int32_t> fired;
  for (uint64_t now = 0; now < 500; now += 37) {
    std::vector<int32_t> step = fire_all(heap, now);
    fired.insert(fired.end(), step.begin(), step.end());
  }
  std::vector<int32_t> rest = fire_all(heap, UINT64_MAX);
  fired.insert(fired.end(), rest.begin(), rest.end());
  CHECK(fired == expected);
  CHECK(heap.empty());
}
