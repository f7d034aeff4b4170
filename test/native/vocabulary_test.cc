// The core's shared vocabulary: the Interest set's operators (native/core/interest.h) and the
// error numbers (native/core/errors.h), which lib/ names with util.getSystemErrorName().
#include <cerrno>

#include "../../native/core/errors.h"
#include "../../native/core/interest.h"
#include "check.h"

using twinloop::Interest;

TEST(interest_operators) {
  CHECK((Interest::kReadable | Interest::kWritable) == Interest::kBoth);
  CHECK((Interest::kBoth & Interest::kWritable) == Interest::kWritable);
  CHECK(~Interest::kReadable == Interest::kWritable);
  CHECK(~Interest::kNone == Interest::kBoth);
  CHECK(~Interest::kBoth == Interest::kNone);
  Interest set = Interest::kNone;
  set |= Interest::kWritable;
  CHECK(has(set, Interest::kWritable));
  CHECK(!has(set, Interest::kReadable));
  CHECK(has(set, Interest::kBoth));  // any of them
  set &= ~Interest::kWritable;
  CHECK(set == Interest::kNone);
}

TEST(interest_from_javascript_bits) {
  CHECK(twinloop::interest_from_bits(0) == Interest::kNone);
  CHECK(twinloop::interest_from_bits(1) == Interest::kReadable);
  CHECK(twinloop::interest_from_bits(2) == Interest::kWritable);
  CHECK(twinloop::interest_from_bits(3) == Interest::kBoth);
  CHECK(twinloop::interest_from_bits(0xffffffffu) == Interest::kBoth);  // other bits are ignored
}

TEST(error_numbers_are_the_platforms) {
#ifdef _WIN32
  CHECK_EQ(twinloop::kEBADF, -4083);
  CHECK_EQ(twinloop::kENOSYS, -4054);
#else
  CHECK_EQ(twinloop::kEBADF, -EBADF);
  CHECK_EQ(twinloop::kENOSYS, -ENOSYS);
  CHECK_EQ(twinloop::kECANCELED, -ECANCELED);
  CHECK_EQ(twinloop::kEINPROGRESS, -EINPROGRESS);
#endif
  CHECK(twinloop::kEAGAIN < 0);
}
