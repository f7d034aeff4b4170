// HandleTable (native/core/handle_table.h): handles stay positive, stale handles find nothing,
// freed slots are reused, and for_each sees exactly the live entries.
#include "../../native/core/handle_table.h"

#include <set>
#include <string>
#include <vector>

#include "check.h"

using twinloop::HandleId;
using Table = twinloop::HandleTable<std::string>;

TEST(insert_find_erase) {
  Table table;
  HandleId a = table.insert("a");
  HandleId b = table.insert("b");
  CHECK(a >= 0);
  CHECK(b >= 0);
  CHECK(a != b);
  CHECK_EQ(table.size(), size_t{2});
  CHECK(table.find(a) != nullptr && *table.find(a) == "a");
  CHECK(table.find(b) != nullptr && *table.find(b) == "b");
  table.erase(a);
  CHECK(table.find(a) == nullptr);
  CHECK_EQ(table.size(), size_t{1});
  CHECK(*table.find(b) == "b");
}

TEST(unknown_handles_find_nothing) {
  Table table;
  CHECK(table.find(-1) == nullptr);
  CHECK(table.find(0) == nullptr);
  HandleId a = table.insert("a");
  CHECK(table.find(a + 1) == nullptr);  // a slot never used
  CHECK(table.find(a | (1 << Table::kSlotBits)) == nullptr);  // right slot, wrong generation
}

TEST(a_freed_slot_is_reused_under_a_new_handle_once_enough_are_free) {
  Table table;
  HandleId first = table.insert("first");
  table.erase(first);
  std::vector<HandleId> others;
  for (size_t i = 0; i < Table::kReuseDistance; ++i) others.push_back(table.insert("other"));
  for (HandleId other : others) CHECK((static_cast<uint32_t>(other) & Table::kSlotMask) != (static_cast<uint32_t>(first) & Table::kSlotMask));
  for (HandleId other : others) table.erase(other);
  HandleId second = table.insert("second");
  CHECK_EQ(static_cast<uint32_t>(second) & Table::kSlotMask, static_cast<uint32_t>(first) & Table::kSlotMask);
  CHECK(second != first);
  CHECK(table.find(first) == nullptr);
  CHECK(*table.find(second) == "second");
}

TEST(erase_resets_the_state) {
  Table table;
  HandleId a = table.insert(std::string(1000, 'x'));
  table.erase(a);
  HandleId b = table.insert("");
  CHECK(table.find(b)->empty());
}

TEST(a_stale_handle_is_refused_for_every_generation_of_its_slot) {
  // A slot comes back only after kReuseDistance others, and with 11 bits of generation: a stale
  // handle is refused for 2^11 x kReuseDistance closes.
  Table table;
  HandleId stale = table.insert("old");
  table.erase(stale);
  for (uint32_t reuse = 1; reuse < (Table::kGenerationMask + 1) * Table::kReuseDistance; ++reuse) {
    HandleId fresh = table.insert("new");
    CHECK(fresh >= 0);
    CHECK(fresh != stale);
    CHECK(table.find(stale) == nullptr);
    table.erase(fresh);
  }
}

TEST(for_each_visits_the_live_entries) {
  Table table;
  std::vector<HandleId> handles;
  for (int i = 0; i < 10; ++i) handles.push_back(table.insert(std::to_string(i)));
  for (int i = 0; i < 10; i += 3) table.erase(handles[static_cast<size_t>(i)]);
  std::set<HandleId> seen;
  table.for_each([&](HandleId handle, std::string& state) {
    CHECK(table.find(handle) == &state);
    seen.insert(handle);
  });
  CHECK_EQ(seen.size(), table.size());
  CHECK_EQ(seen.size(), size_t{6});
  for (int i = 0; i < 10; ++i) CHECK(seen.contains(handles[static_cast<size_t>(i)]) == (i % 3 != 0));
}

TEST(a_state_stays_where_it_is_while_the_table_grows) {
  // The slots live in blocks that never move: growing copies nothing (and leaves malloc no old
  // copy to keep), and what find() returned stays valid while more sockets are accepted.
  Table table;
  HandleId first = table.insert("first");
  std::string* state = table.find(first);
  for (int i = 0; i < 5000; ++i) table.insert(std::to_string(i));
  CHECK(table.find(first) == state);
  CHECK(*state == "first");
}
