// BytePool (native/core/byte_pool.h): blocks of the asked size, copies, recycling within a size
// class, ownership moving with OwnedBytes, and memory that cannot be had reported, not aborted on.
#include "../../native/core/byte_pool.h"

#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "check.h"

using twinloop::BytePool;
using twinloop::OwnedBytes;

// ASan reports an allocation it cannot meet and stops, unless told to answer null as the C
// library does — what BytePool is written for (ignored in a build without ASan).
extern "C" const char* __asan_default_options() { return "allocator_may_return_null=1"; }

TEST(acquire_gives_the_size_asked) {
  BytePool pool;
  for (size_t size : {size_t{1}, size_t{512}, size_t{513}, size_t{65536}, size_t{65537}, size_t{1} << 20}) {
    OwnedBytes bytes = pool.acquire(size);
    CHECK_EQ(bytes.size(), size);
    CHECK_EQ(bytes.span().size(), size);
    std::memset(bytes.span().data(), 0xab, size);  // the whole block is writable (ASan checks)
  }
}

TEST(copy_of_copies) {
  BytePool pool;
  std::vector<uint8_t> source(3000);
  for (size_t i = 0; i < source.size(); ++i) source[i] = static_cast<uint8_t>(i * 7);
  OwnedBytes copy = pool.copy_of(source);
  CHECK_EQ(copy.size(), source.size());
  CHECK(std::memcmp(copy.span().data(), source.data(), source.size()) == 0);
  CHECK_EQ(pool.copy_of({}).size(), size_t{0});
}

TEST(a_released_block_is_reused_within_its_class) {
  BytePool pool;
  uint8_t* first;
  {
    OwnedBytes bytes = pool.acquire(1000);  // the 1 KiB class
    first = bytes.span().data();
  }
  OwnedBytes again = pool.acquire(700);  // same class
  CHECK(again.span().data() == first);
  CHECK_EQ(again.size(), size_t{700});
}

TEST(moving_transfers_ownership) {
  BytePool pool;
  OwnedBytes a = pool.acquire(100);
  uint8_t* data = a.span().data();
  OwnedBytes b = std::move(a);
  CHECK_EQ(a.size(), size_t{0});
  CHECK(b.span().data() == data);
  OwnedBytes c;
  c = std::move(b);
  CHECK_EQ(b.size(), size_t{0});
  CHECK(c.span().data() == data);
  c = pool.acquire(10);  // the old block goes back to the pool
  OwnedBytes d = pool.acquire(100);
  CHECK(d.span().data() == data);
}

TEST(many_blocks_in_flight_and_back) {
  BytePool pool;
  std::vector<OwnedBytes> in_flight;
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 300; ++i) in_flight.push_back(pool.acquire(static_cast<size_t>(512 + i * 211)));
    in_flight.clear();
  }
  CHECK(in_flight.empty());
}

TEST(memory_that_cannot_be_had_is_an_empty_block_and_the_pool_goes_on) {
  BytePool pool;
  // No allocator hands out 2^62 bytes: it stands for a kMaxTransfer block refused under
  // RLIMIT_AS (test/native-limits.test.ts provokes that one).
  OwnedBytes none = pool.acquire(size_t{1} << 62);
  CHECK(!none);
  CHECK_EQ(none.size(), size_t{0});
  CHECK(none.span().empty());
  CHECK(twinloop::allocate_aligned(SIZE_MAX) == nullptr);  // refused before its rounding wraps
  OwnedBytes some = pool.acquire(1000);
  CHECK(static_cast<bool>(some));
  CHECK_EQ(some.size(), size_t{1000});
  none = pool.copy_of(some.span());
  CHECK(static_cast<bool>(none));
  CHECK_EQ(none.size(), size_t{1000});
}
