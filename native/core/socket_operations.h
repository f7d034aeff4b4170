// The operations of one socket, and the rules backend.h sets for them, kept once for every
// backend: the queues of submitted reads, writes and accepts, the connect in progress, the
// streaming and reactor flags, and what cancel, close and a finished send do to them.
//
// A backend's per-socket state derives from SocketOperations and adds what its primitive needs (a
// descriptor, SQE bookkeeping, an OVERLAPPED). All the backend decides here is how many operations
// at the head of each queue its kernel holds — `reads_held`, `writes_held`, `accepts_held`,
// `connect_held`, set when it hands them over and cleared when it takes them back. Those cannot
// be withdrawn, since the kernel may still use their buffers: cancel() marks them `cancelled` and
// tells the backend to recall them; they settle when the kernel lets go. The readiness backends,
// whose syscalls finish inside the call, never hold any.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <type_traits>
#include <utility>

#include "accept_queue.h"
#include "backend.h"
#include "event_outbox.h"

namespace twinloop {

struct QueuedRead {
  std::span<uint8_t> buffer;
  int32_t op_id;
  bool cancelled = false;  // cancel() came while the kernel held it
};

struct QueuedWrite {
  std::span<const uint8_t> rest;  // what is left to send
  int32_t op_id;
  size_t sent = 0;  // > 0: the peer has a prefix, so withdrawing the rest would tear the stream
  bool cancelled = false;
};

// A socket's FIFO of reads or writes: the subset of std::vector the rules use, in as many bytes
// (24), but completing the head is O(1). A vector's erase(begin()) moved every entry behind it,
// so N queued reads cost O(N^2): 160k took 9.3 s on epoll, 63% in memmove (audit p22). The live
// entries are [head_, end_) of one allocation, which nothing takes until an operation has to
// wait; the space the head leaves is reused when the queue empties, or moved to when a push finds
// the end full and at least half of it free (amortised O(1)), so memory stays bounded by twice
// the most ever queued.
template <typename T>
class OperationQueue {
  // Entries behind the head or past a shrunk end are left as they are, never destroyed.
  static_assert(std::is_trivially_destructible_v<T>, "an OperationQueue entry must own nothing");

 public:
  OperationQueue() = default;
  OperationQueue(OperationQueue&& other) noexcept
      : items_(std::move(other.items_)),
        head_(std::exchange(other.head_, 0)),
        end_(std::exchange(other.end_, 0)),
        capacity_(std::exchange(other.capacity_, 0)) {}
  OperationQueue& operator=(OperationQueue&& other) noexcept {
    items_ = std::move(other.items_);
    head_ = std::exchange(other.head_, 0);
    end_ = std::exchange(other.end_, 0);
    capacity_ = std::exchange(other.capacity_, 0);
    return *this;
  }

  bool empty() const { return head_ == end_; }
  size_t size() const { return end_ - head_; }
  T* begin() { return items_.get() + head_; }
  T* end() { return items_.get() + end_; }
  const T* begin() const { return items_.get() + head_; }
  const T* end() const { return items_.get() + end_; }
  T& operator[](size_t index) { return items_[head_ + index]; }
  const T& operator[](size_t index) const { return items_[head_ + index]; }
  T& front() { return items_[head_]; }
  const T& front() const { return items_[head_]; }
  T& back() { return items_[end_ - 1]; }

  void push_back(const T& item) {
    if (end_ == capacity_) make_room();
    items_[end_++] = item;
  }
  void pop_back() { shrink_to(size() - 1); }
  // Removes [first, last): O(1) at the head, else the entries behind it move up.
  void erase(T* first, T* last) {
    if (first == begin()) {
      head_ += static_cast<uint32_t>(last - first);
    } else {
      T* moved_end = std::move(last, end(), first);
      end_ = static_cast<uint32_t>(moved_end - items_.get());
    }
    if (head_ == end_) head_ = end_ = 0;
  }
  void erase(T* position) { erase(position, position + 1); }
  // Only ever shrinks: the rules drop the tail, they never pad it.
  void resize(size_t count) { shrink_to(count); }
  void clear() { head_ = end_ = 0; }

 private:
  void shrink_to(size_t count) {
    end_ = head_ + static_cast<uint32_t>(count);
    if (head_ == end_) head_ = end_ = 0;
  }
  void make_room() {
    if (head_ >= capacity_ / 2 && head_ > 0) {
      std::move(begin(), end(), items_.get());
    } else {
      uint32_t capacity = capacity_ == 0 ? 1 : capacity_ * 2;  // most sockets never queue two
      auto items = std::make_unique_for_overwrite<T[]>(capacity);
      std::move(begin(), end(), items.get());
      items_ = std::move(items);
      capacity_ = capacity;
    }
    end_ -= head_;
    head_ = 0;
  }

  std::unique_ptr<T[]> items_;
  uint32_t head_ = 0;
  uint32_t end_ = 0;
  uint32_t capacity_ = 0;
};

// What cancel() found: done with, or held by the kernel and to be recalled from it.
enum class CancelOutcome : uint8_t { kNotFound, kSettled, kRecallRead, kRecallWrite, kRecallAccept, kRecallConnect };

struct SocketOperations {
  OperationQueue<QueuedRead> reads;
  OperationQueue<QueuedWrite> writes;
  AcceptQueue accepts;
  int32_t connect_op = -1;  // >= 0 while a connect is in progress
  uint8_t reads_held = 0;
  uint8_t writes_held = 0;
  uint8_t accepts_held = 0;
  bool connect_held = false;
  Interest watched = Interest::kNone;  // reactor interest (watch())
  bool listener = false;
  bool streaming_read = false;  // read_start
  // read_start was called once: the stream owns the reads for good, because the bytes it has
  // delivered but JS has not consumed yet come before anything a try_read or submit_read gets.
  bool streamed = false;
  bool streaming_accept = false;
  bool write_torn = false;  // a write was cancelled half-sent: no later byte may follow it

  // The refusals the contract makes before any syscall.
  int check_read() const { return streamed ? kEBUSY : 0; }
  int check_write() const { return connect_op >= 0 ? kENOTCONN : write_torn ? kEPIPE : 0; }
  int check_accept() const { return listener ? 0 : kEINVAL; }
  // Backend::try_write's refusals. Its bytes come after every write submitted before it, so while
  // one is queued or in flight (or the connect that they wait for) the reactor is told "not now"
  // (-EAGAIN), and its kWritable is held back until the queue has drained (reactor_writable());
  // after a torn write no byte may follow (-EPIPE, as submit_write).
  int check_try_write() const {
    if (write_torn) return kEPIPE;
    return reactor_writable() && connect_op < 0 ? 0 : kEAGAIN;
  }
  // Whether a kWritable may be reported: a try_write would not be refused for the queue. A
  // backend that holds one back reports it once the queue drains, so a watcher is not stranded.
  bool reactor_writable() const { return writes.empty(); }

  // Backend::set_streaming; the backend then updates what it asks of the kernel.
  int set_streaming(Stream stream, bool on);

  // Backend::cancel for this socket's operations. A queued one is withdrawn (-ECANCELED); a
  // half-sent write tears the stream (tear_writes); one the kernel holds is marked `cancelled`
  // and left to the backend to recall.
  CancelOutcome cancel(HandleId handle, int32_t op_id, EventOutbox& out);
  // Backend::close: withdraws every operation the kernel does not hold. Returns whether it holds
  // any, which then settle (with -ECANCELED, or what they did) as the kernel gives them back.
  bool withdraw_unheld(HandleId handle, EventOutbox& out);

  // A send that carried the first `carried` writes put `bytes` on the wire: the writes it
  // finished complete with 0, a short one keeps its rest at the head.
  void account_sent(HandleId handle, size_t carried, size_t bytes, EventOutbox& out);
  // The connection broke: every queued write fails with `error`, in order.
  void fail_writes(HandleId handle, int32_t error, EventOutbox& out);
  // The head write failed with `error` on a connection that may go on (a send the kernel
  // refused for want of memory): the writes behind it are still sent. Unless part of it had gone
  // out: then the peer has a torn message, so the writes behind it fail with the same error and
  // later ones with EPIPE, rather than land after the gap.
  void fail_head_write(HandleId handle, int32_t error, EventOutbox& out);
  // Backend::submit_write queues its write, with what `keep` keeps of the `rest` still to send
  // after `sent` bytes went out inside the call. When `keep` has no memory for it, the write
  // fails (-ENOMEM) and is not queued; if part of it went out, the stream is torn.
  int queue_write(std::span<const uint8_t> rest, int32_t op_id, size_t sent, const WriteKeep& keep) {
    std::optional<std::span<const uint8_t>> kept = keep(rest);
    if (!kept) [[unlikely]] {
      if (sent > 0) write_torn = true;
      return kENOMEM;
    }
    writes.push_back({*kept, op_id, sent});
    return 0;
  }
  // The write just queued could not be started, and the backend returns the error for it: it
  // leaves the queue, and the stream is torn if a speculative send had put part of it out.
  void unqueue_last_write() {
    if (writes.back().sent > 0) write_torn = true;
    writes.pop_back();
  }
  // Writes cancelled while the kernel held them, once it has let go: withdrawn if none of their
  // bytes went out, else torn.
  void settle_cancelled_writes(HandleId handle, EventOutbox& out);
  // Write `index` was cancelled half-sent (only the head can be): it completes with the count the
  // peer got, every write behind it is withdrawn — their bytes would land in the middle of a
  // message — and later writes fail with EPIPE (backend.h, cancel()).
  void tear_writes(HandleId handle, size_t index, EventOutbox& out);

  // The read direction broke: every queued read and accept fails with `error`, in order.
  void fail_reads(HandleId handle, int32_t error, EventOutbox& out);
  // The head read finished with `result`.
  void complete_read(HandleId handle, int32_t result, EventOutbox& out);

  // The queued accept that what the kernel delivered goes to — accepts are interchangeable: an
  // -ECANCELED to one that was cancelled, anything else to the oldest still wanted (or, when all
  // were cancelled, the oldest: a connection taken is never dropped). Removes it and returns its
  // op_id, or -1 when no accept waits. The caller posts the completion (after adopting the new
  // connection, which may move this state).
  int32_t take_accept(bool cancelled_result);
  // The kernel gave back its last accept: the cancelled ones still queued settle with -ECANCELED.
  void settle_cancelled_accepts(HandleId handle, EventOutbox& out);
};

}  // namespace twinloop
