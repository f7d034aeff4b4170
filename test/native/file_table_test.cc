// FileTable (native/core/file_table.h): the lifecycle every backend's regular files share — a
// handle per open file or EMFILE, no new operation on a closing file, a close that waits for the
// operations in flight, the walk teardown makes over what is open, and the queue that runs the
// transfers at the current position one at a time, in submission order.
#include "../../native/core/file_table.h"

#include <utility>
#include <vector>

#include "check.h"

using twinloop::FileTable;
using twinloop::HandleId;

namespace {

// Stands for UniqueFd/UniqueHandle: counts the descriptors it closes and those released from it.
struct Descriptor {
  int number = -1;
  int* closed = nullptr;
  Descriptor(int n, int* c) : number(n), closed(c) {}
  Descriptor() = default;
  Descriptor(Descriptor&& other) noexcept : number(other.number), closed(other.closed) { other.number = -1; }
  Descriptor& operator=(Descriptor&& other) noexcept {
    std::swap(number, other.number);
    std::swap(closed, other.closed);
    return *this;
  }
  ~Descriptor() {
    if (number >= 0 && closed != nullptr) ++*closed;
  }
  int release() { return std::exchange(number, -1); }
};

}  // namespace

TEST(a_close_waits_for_the_operations_in_flight_and_refuses_new_ones) {
  int closed = 0;
  FileTable<Descriptor> files;
  int handle = files.insert(Descriptor(3, &closed));
  CHECK(handle >= 0);
  auto* file = files.usable(handle);
  CHECK(file != nullptr);
  FileTable<Descriptor>::started(*file);
  bool close_now = true;
  CHECK_EQ(files.request_close(handle, 9, close_now), 0);
  CHECK(!close_now);  // a read is in flight
  CHECK(files.usable(handle) == nullptr);  // EBADF for anything new
  CHECK_EQ(files.request_close(handle, 10, close_now), twinloop::kEBADF);
  auto* to_close = files.finished(handle, false);
  CHECK(to_close != nullptr);  // the last one came back: the close starts now
  CHECK_EQ(to_close->close_op, 9);
  FileTable<Descriptor>::started(*to_close);
  CHECK(files.finished(handle, true) == nullptr);
  CHECK(files.find(handle) == nullptr);
  CHECK_EQ(closed, 0);  // the OS closed it: the table does not close the number again
}

TEST(for_each_walks_every_open_file) {
  int closed = 0;
  FileTable<Descriptor> files;
  std::vector<HandleId> opened{files.insert(Descriptor(3, &closed)), files.insert(Descriptor(4, &closed))};
  bool close_now = false;
  CHECK_EQ(files.request_close(opened[1], 7, close_now), 0);
  CHECK(close_now);
  std::vector<int> numbers;
  std::vector<HandleId> handles;
  files.for_each([&](HandleId handle, FileTable<Descriptor>::File& file) {
    handles.push_back(handle);
    numbers.push_back(file.descriptor.number);
  });
  CHECK(handles == opened);  // closing ones too: teardown still has to cancel their transfers
  CHECK(numbers == (std::vector<int>{3, 4}));
}

TEST(transfers_at_the_current_position_start_one_at_a_time_in_submission_order) {
  using Files = FileTable<Descriptor>;
  Files files;
  int handle = files.insert(Descriptor(3, nullptr));
  auto& file = *files.usable(handle);
  CHECK(Files::queue_at_position(file, {{}, 1, false}));  // nothing running: starts now
  CHECK(!Files::queue_at_position(file, {{}, 2, true}));
  CHECK(!Files::queue_at_position(file, {{}, 3, false}));
  CHECK(!Files::queue_at_position(file, {{}, 4, false}));
  CHECK_EQ(file.in_flight, 4);  // queued ones count: a close waits for them
  twinloop::PositionTransfer withdrawn{};
  CHECK(Files::withdraw_at_position(file, 3, &withdrawn));  // cancelled while waiting
  CHECK_EQ(withdrawn.op_id, 3);
  CHECK(!Files::withdraw_at_position(file, 1));  // running: only the backend can cancel it
  CHECK(files.finished(handle, false) == nullptr);  // the withdrawn one reported ECANCELED
  twinloop::PositionTransfer next{};
  CHECK(Files::next_at_position(file, next));  // 1 completed (whatever its result): 2 starts
  CHECK_EQ(next.op_id, 2);
  CHECK(next.write);
  CHECK(files.finished(handle, false) == nullptr);
  CHECK(Files::next_at_position(file, next));
  CHECK_EQ(next.op_id, 4);
  CHECK(files.finished(handle, false) == nullptr);
  CHECK(!Files::next_at_position(file, next));  // 4 completed, none waiting: the position is idle
  CHECK(files.finished(handle, false) == nullptr);
  CHECK_EQ(file.in_flight, 0);
  CHECK(Files::queue_at_position(file, {{}, 5, false}));  // so the next one starts at once
}
