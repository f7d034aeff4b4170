// io_uring's rings with raw syscalls (no liburing): setup with feature probing, the submission
// and completion queues, and the provided-buffer ring that multishot recv fills. The socket
// operations are submitted and dispatched by the backend (io_uring_backend.h, with its file map);
// this file knows nothing about sockets.
#pragma once

#include <linux/io_uring.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "../core/limits.h"
#include "posix_socket.h"

namespace twinloop {

// Owns one mmap; unmapping is the destructor's job.
class Mapping {
 public:
  Mapping() = default;
  Mapping(Mapping&& other) noexcept
      : address_(std::exchange(other.address_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  Mapping& operator=(Mapping&& other) noexcept {
    if (this != &other) {
      reset();
      address_ = std::exchange(other.address_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() { reset(); }

  // A shared mapping of one of the ring's regions (IORING_OFF_*).
  static int map_ring(int fd, size_t size, uint64_t offset, Mapping& out);
  // Private anonymous memory, reserved but not committed: pages cost RSS only once touched.
  static int anonymous(size_t size, Mapping& out);

  uint8_t* get() const { return static_cast<uint8_t*>(address_); }
  size_t size() const { return size_; }
  void reset();

 private:
  void* address_ = nullptr;
  size_t size_ = 0;
};

// What setup and probing found on this kernel.
struct RingFeatures {
  uint32_t setup_flags = 0;  // the IORING_SETUP_* flags the ring was created with
  uint32_t kernel_features = 0;  // IORING_FEAT_*
  bool registered_ring_fd = false;
  bool multishot_accept = false;
  bool multishot_recv = false;
};

class Ring {
 public:
  Ring() = default;
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;

  // Creates the ring with the best flags this kernel accepts. On failure returns a negative errno
  // and says why in `reason`.
  int open(unsigned sq_entries, unsigned cq_entries, std::string& reason);

  int fd() const { return fd_.get(); }
  const RingFeatures& features() const { return features_; }
  bool supports(uint8_t opcode) const { return opcode < kMaxOps && supported_[opcode]; }

  // A zeroed SQE, or null when the SQ is full (the caller submits and asks again).
  io_uring_sqe* get_sqe();
  // SQEs prepared but not yet taken by the kernel.
  unsigned pending() const { return sqe_tail_ - __atomic_load_n(sq_head_, __ATOMIC_ACQUIRE); }
  // Submits everything pending; with `get_events` also runs deferred completion work and flushes
  // the CQ overflow list. Returns the kernel's result (SQEs taken, or a negative errno).
  int enter(bool get_events);
  int register_op(unsigned opcode, void* arg, unsigned count);
  // Submits everything pending and waits until `min_complete` CQEs are there or `timeout_ms`
  // passed (-1: no limit; a kernel without IORING_FEAT_EXT_ARG waits without one).
  int wait(unsigned min_complete, int timeout_ms);

  // Completions that only a GETEVENTS enter brings into the CQ: deferred task work
  // (IORING_SQ_TASKRUN) or CQEs on the overflow list (IORING_SQ_CQ_OVERFLOW).
  bool completions_wait_in_kernel() const {
    return (__atomic_load_n(sq_flags_, __ATOMIC_ACQUIRE) & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW)) != 0;
  }

  // Completion queue: consume in order, publish the head once per reaping pass.
  unsigned cq_head() const { return cq_head_local_; }
  unsigned cq_tail() const { return __atomic_load_n(cq_tail_, __ATOMIC_ACQUIRE); }
  const io_uring_cqe& cqe_at(unsigned index) const { return cqes_[index & cq_mask_]; }
  void cq_advance(unsigned count) {
    cq_head_local_ += count;
    __atomic_store_n(cq_head_, cq_head_local_, __ATOMIC_RELEASE);
  }

 private:
  static constexpr unsigned kMaxOps = 256;
  int setup(unsigned sq_entries, unsigned cq_entries, std::string& reason);
  int map_rings();
  void probe();

  UniqueFd fd_;
  Mapping sq_ring_;
  Mapping cq_ring_;  // empty when the kernel maps both rings at once (IORING_FEAT_SINGLE_MMAP)
  Mapping sqes_map_;
  io_uring_params params_{};
  RingFeatures features_;
  bool supported_[kMaxOps] = {};
  int enter_fd_ = -1;  // the registered index when registered_ring_fd, else the fd
  unsigned enter_flags_ = 0;

  unsigned* sq_head_ = nullptr;
  unsigned* sq_tail_ = nullptr;
  unsigned* sq_flags_ = nullptr;
  unsigned* sq_array_ = nullptr;
  unsigned sq_mask_ = 0;
  unsigned sq_entries_ = 0;
  unsigned sqe_tail_ = 0;
  io_uring_sqe* sqes_ = nullptr;

  unsigned* cq_head_ = nullptr;
  unsigned* cq_tail_ = nullptr;
  unsigned cq_mask_ = 0;
  unsigned cq_head_local_ = 0;
  io_uring_cqe* cqes_ = nullptr;
};

// The provided-buffer ring (IORING_REGISTER_PBUF_RING): one shared pool of receive buffers for
// every socket of the loop, instead of a buffer per connection.
//
// The kernel takes buffers from the head in ring order and we return them at the tail, so every
// buffer ever provided is eventually written to. The pool therefore starts at 1 MiB and doubles
// only when the kernel runs out (ENOBUFS): its RSS is the peak of the buffers in use at once, not
// the 256 MiB of address space it may grow to.
//
// Where the kernel consumes buffers incrementally (IOU_PBUF_RING_INC, Linux 6.12), a recv takes
// only the bytes it received from the head buffer, and the next recv, of any socket, goes on from
// there: small messages from many connections pack into one buffer instead of taking one each.
// A buffer then costs nothing for being large, and each is as large as a readiness backend's read
// (64 KiB, kMaxStreamRead): a 64 KiB message arrives as one or two CQEs, each one chunk and one
// send of an echo, instead of eight. Consumed whole (before 6.12), a buffer is 8 KiB, which holds
// a typical request while keeping the pool small. COOP_TASKRUN completes a recv as soon as its
// data arrives, and its buffer stays taken until the CQE is reaped, so a burst takes one buffer
// per connection with data there: the pool may grow to a buffer ring's limit (32768), as 4096 ran
// dry at 10 000 clients and half of them starved for seconds.
class BufferRing {
 public:
  static constexpr uint16_t kGroup = 0;
  static constexpr unsigned kIncrementalBufferSize = kMaxStreamRead;
  static constexpr unsigned kWholeBufferSize = 8 * 1024;
  static constexpr size_t kPoolReserve = size_t{256} << 20;
  static constexpr unsigned kInitialBytes = 1U << 20;

  // Registers a ring of up to `max_buffers` (at most 32768) and provides the first of them.
  int open(Ring& ring, unsigned max_buffers);

  unsigned buffer_size() const { return buffer_size_; }
  unsigned provided() const { return provided_; }
  unsigned max_buffers() const { return max_buffers_; }
  bool incremental() const { return incremental_; }
  // Where the bytes of a CQE that carries a buffer (IORING_CQE_F_BUFFER) start.
  const uint8_t* received(const io_uring_cqe& cqe) const;
  // Done with what a CQE received, if it carries a buffer: the buffer goes back to the kernel
  // once the kernel has used it up.
  void release(const io_uring_cqe& cqe);
  // Provides more buffers after an ENOBUFS; false when the pool is at its maximum.
  bool grow();

 private:
  int register_ring(Ring& ring, unsigned max_buffers, unsigned buffer_size, uint16_t flags);
  void add(unsigned id);

  Mapping ring_memory_;
  Mapping data_;
  // With incremental consumption: how far into each buffer the kernel has filled it.
  Mapping offsets_;
  io_uring_buf_ring* ring_ = nullptr;
  unsigned entries_ = 0;
  unsigned max_buffers_ = 0;
  unsigned buffer_size_ = 0;
  unsigned provided_ = 0;
  uint16_t tail_ = 0;
  bool incremental_ = false;
};

}  // namespace twinloop
