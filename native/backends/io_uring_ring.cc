#include "io_uring_ring.h"

#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

namespace twinloop {

int Mapping::map_ring(int fd, size_t size, uint64_t offset, Mapping& out) {
  // MAP_POPULATE: the rings are touched on every batch; faulting them in now keeps the first
  // batches off the page-fault path.
  void* address = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                         static_cast<off_t>(offset));
  if (address == MAP_FAILED) return -errno;
  out.reset();
  out.address_ = address;
  out.size_ = size;
  return 0;
}

int Mapping::anonymous(size_t size, Mapping& out) {
  void* address = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (address == MAP_FAILED) return -errno;
  out.reset();
  out.address_ = address;
  out.size_ = size;
  return 0;
}

void Mapping::reset() {
  if (address_ != nullptr) ::munmap(address_, size_);
  address_ = nullptr;
  size_ = 0;
}

namespace {

int sys_setup(unsigned entries, io_uring_params* params) {
  int fd = static_cast<int>(::syscall(__NR_io_uring_setup, entries, params));
  return fd >= 0 ? fd : -errno;
}

// Why io_uring_setup was refused, in words: the answer users need to fix their host.
std::string explain_setup_failure(int error) {
  if (error == kENOSYS) return "io_uring_setup: ENOSYS (kernel built without io_uring, or an emulator such as qemu-user)";
  if (error == kEINVAL) return "io_uring_setup: EINVAL (kernel older than 5.19, without COOP_TASKRUN)";
  if (error == kENOMEM) return "io_uring_setup: ENOMEM (RLIMIT_MEMLOCK too low for the rings on kernels < 5.12?)";
  if (error != kEPERM) return std::string("io_uring_setup failed: ") + std::strerror(-error);
  int disabled = -1;
  if (FILE* file = std::fopen("/proc/sys/kernel/io_uring_disabled", "re")) {
    if (std::fscanf(file, "%d", &disabled) != 1) disabled = -1;
    std::fclose(file);
  }
  if (disabled == 2) return "io_uring_setup: EPERM, disabled by sysctl kernel.io_uring_disabled=2";
  if (disabled == 1) {
    return "io_uring_setup: EPERM, kernel.io_uring_disabled=1 allows only members of kernel.io_uring_group";
  }
  return "io_uring_setup: EPERM, blocked by a seccomp profile (the default of Docker and many container runtimes)";
}

}  // namespace

int Ring::open(unsigned sq_entries, unsigned cq_entries, std::string& reason) {
  if (int rc = setup(sq_entries, cq_entries, reason); rc < 0) return rc;
  if (int rc = map_rings(); rc < 0) {
    reason = std::string("mmap of the io_uring rings failed: ") + std::strerror(-rc);
    return rc;
  }
  probe();
  enter_fd_ = fd_.get();
  // A registered ring fd spares the kernel an fget/fput of the ring on every io_uring_enter.
  io_uring_rsrc_update update{};
  update.offset = ~0u;  // let the kernel pick the slot
  update.data = static_cast<uint64_t>(fd_.get());
  if (register_op(IORING_REGISTER_RING_FDS, &update, 1) == 1) {
    enter_fd_ = static_cast<int>(update.offset);
    enter_flags_ = IORING_ENTER_REGISTERED_RING;
    features_.registered_ring_fd = true;
  }
  return 0;
}

int Ring::setup(unsigned sq_entries, unsigned cq_entries, std::string& reason) {
  // COOP_TASKRUN (5.19): completion work runs as task work that never interrupts this thread
  // while it runs, only wakes it while it sleeps (Node's loop in epoll_wait), and runs on its way
  // back to user space, where the CQEs it posts signal the registered eventfd at once (see init()
  // in io_uring.cc). Not DEFER_TASKRUN: its work waits for a GETEVENTS enter, and the eventfd
  // signal for work queued from softirq (a network completion) is deferred by the kernel to
  // an RCU callback (perf: woken from rcu_do_batch -> io_eventfd_do_signal), 14-16 ms on Linux
  // 6.18: each request to an otherwise idle loop waited that long. SINGLE_ISSUER (6.0) spares
  // the submission lock; TASKRUN_FLAG tells us, without a syscall, that completion work waits;
  // SUBMIT_ALL (5.18) keeps one bad SQE from leaving the rest of the batch unsubmitted.
  constexpr uint32_t kBase = IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP | IORING_SETUP_COOP_TASKRUN |
                             IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_SUBMIT_ALL;
  constexpr uint32_t kAttempts[] = {IORING_SETUP_SINGLE_ISSUER, 0};
  int rc = kEINVAL;
  for (uint32_t flags : kAttempts) {
    params_ = {};
    params_.flags = kBase | flags;
    params_.cq_entries = cq_entries;
    rc = sys_setup(sq_entries, &params_);
    if (rc >= 0) {
      fd_.reset(rc);
      features_.setup_flags = params_.flags;
      features_.kernel_features = params_.features;
      return 0;
    }
    if (rc != kEINVAL) break;  // only "unknown flag" is worth another try
  }
  reason = explain_setup_failure(rc);
  return rc;
}

int Ring::map_rings() {
  size_t sq_size = params_.sq_off.array + params_.sq_entries * sizeof(unsigned);
  size_t cq_size = params_.cq_off.cqes + params_.cq_entries * sizeof(io_uring_cqe);
  bool single = params_.features & IORING_FEAT_SINGLE_MMAP;
  if (single) sq_size = cq_size = std::max(sq_size, cq_size);
  if (int rc = Mapping::map_ring(fd_.get(), sq_size, IORING_OFF_SQ_RING, sq_ring_); rc < 0) return rc;
  if (!single) {
    if (int rc = Mapping::map_ring(fd_.get(), cq_size, IORING_OFF_CQ_RING, cq_ring_); rc < 0) return rc;
  }
  if (int rc = Mapping::map_ring(fd_.get(), params_.sq_entries * sizeof(io_uring_sqe), IORING_OFF_SQES, sqes_map_);
      rc < 0) {
    return rc;
  }
  uint8_t* sq = sq_ring_.get();
  uint8_t* cq = single ? sq : cq_ring_.get();
  sq_head_ = reinterpret_cast<unsigned*>(sq + params_.sq_off.head);
  sq_tail_ = reinterpret_cast<unsigned*>(sq + params_.sq_off.tail);
  sq_flags_ = reinterpret_cast<unsigned*>(sq + params_.sq_off.flags);
  sq_array_ = reinterpret_cast<unsigned*>(sq + params_.sq_off.array);
  sq_mask_ = *reinterpret_cast<unsigned*>(sq + params_.sq_off.ring_mask);
  sq_entries_ = params_.sq_entries;
  sqe_tail_ = *sq_tail_;
  sqes_ = reinterpret_cast<io_uring_sqe*>(sqes_map_.get());
  cq_head_ = reinterpret_cast<unsigned*>(cq + params_.cq_off.head);
  cq_tail_ = reinterpret_cast<unsigned*>(cq + params_.cq_off.tail);
  cq_mask_ = *reinterpret_cast<unsigned*>(cq + params_.cq_off.ring_mask);
  cq_head_local_ = *cq_head_;
  cqes_ = reinterpret_cast<io_uring_cqe*>(cq + params_.cq_off.cqes);
  return 0;
}

void Ring::probe() {
  std::vector<uint8_t> memory(sizeof(io_uring_probe) + kMaxOps * sizeof(io_uring_probe_op));
  auto* probe = reinterpret_cast<io_uring_probe*>(memory.data());
  if (register_op(IORING_REGISTER_PROBE, probe, kMaxOps) < 0) return;
  for (unsigned i = 0; i < probe->ops_len && i < kMaxOps; ++i) {
    if (probe->ops[i].flags & IO_URING_OP_SUPPORTED) supported_[probe->ops[i].op] = true;
  }
  // Flags of an opcode cannot be probed; the opcodes that arrived in the same release can.
  // Multishot accept came with IORING_OP_SOCKET (5.19), multishot recv with IORING_OP_SEND_ZC (6.0).
  features_.multishot_accept = supports(IORING_OP_SOCKET);
  features_.multishot_recv = supports(IORING_OP_SEND_ZC);
}

io_uring_sqe* Ring::get_sqe() {
  unsigned head = __atomic_load_n(sq_head_, __ATOMIC_ACQUIRE);
  if (sqe_tail_ - head >= sq_entries_) return nullptr;
  unsigned index = sqe_tail_ & sq_mask_;
  io_uring_sqe* sqe = &sqes_[index];
  std::memset(sqe, 0, sizeof(*sqe));
  sq_array_[index] = index;
  ++sqe_tail_;
  return sqe;
}

int Ring::enter(bool get_events) {
  unsigned to_submit = pending();
  // The release store publishes the SQE contents written before it.
  __atomic_store_n(sq_tail_, sqe_tail_, __ATOMIC_RELEASE);
  unsigned flags = enter_flags_ | (get_events ? IORING_ENTER_GETEVENTS : 0);
  for (;;) {
    long rc = ::syscall(__NR_io_uring_enter, enter_fd_, to_submit, 0, flags, nullptr, 0);
    if (rc >= 0) return static_cast<int>(rc);
    if (errno != EINTR) return -errno;
  }
}

int Ring::wait(unsigned min_complete, int timeout_ms) {
  unsigned to_submit = pending();
  __atomic_store_n(sq_tail_, sqe_tail_, __ATOMIC_RELEASE);
  __kernel_timespec timeout{timeout_ms / 1000, (timeout_ms % 1000) * 1000000LL};
  io_uring_getevents_arg arg{};
  if (timeout_ms >= 0) arg.ts = reinterpret_cast<uint64_t>(&timeout);
  unsigned flags = enter_flags_ | IORING_ENTER_GETEVENTS;
  void* argp = nullptr;
  size_t arg_size = 0;
  if (features_.kernel_features & IORING_FEAT_EXT_ARG) {
    flags |= IORING_ENTER_EXT_ARG;
    argp = &arg;
    arg_size = sizeof(arg);
  }
  long rc = ::syscall(__NR_io_uring_enter, enter_fd_, to_submit, min_complete, flags, argp, arg_size);
  return rc >= 0 ? static_cast<int>(rc) : -errno;
}

int Ring::register_op(unsigned opcode, void* arg, unsigned count) {
  long rc = ::syscall(__NR_io_uring_register, fd_.get(), opcode, arg, count);
  return rc >= 0 ? static_cast<int>(rc) : -errno;
}

namespace {

// Incremental consumption of provided buffers (Linux 6.12) is newer than the uapi headers of the
// oldest build hosts; these are its values in the kernel's ABI.
constexpr uint16_t kPbufRingIncremental = 2;  // IOU_PBUF_RING_INC
constexpr uint32_t kCqeBufferMore = 1U << 4;  // IORING_CQE_F_BUF_MORE

unsigned buffer_id(const io_uring_cqe& cqe) { return cqe.flags >> IORING_CQE_BUFFER_SHIFT; }

// The registration's flags field, which uapi headers before Linux 6.4 call `pad`.
template <typename Registration>
void set_flags(Registration& reg, uint16_t flags) {
  if constexpr (requires { reg.flags; }) {
    reg.flags = flags;
  } else {
    reg.pad = flags;
  }
}

}  // namespace

int BufferRing::open(Ring& ring, unsigned max_buffers) {
  if (max_buffers == 0 || max_buffers > 32768) return kEINVAL;  // the kernel's limit on a buffer ring
  int rc = register_ring(ring, max_buffers, kIncrementalBufferSize, kPbufRingIncremental);
  incremental_ = rc == 0;
  if (rc == kEINVAL) rc = register_ring(ring, max_buffers, kWholeBufferSize, 0);  // before 6.12: every recv takes a whole buffer
  if (rc < 0) return rc;
  if ((rc = Mapping::anonymous(size_t{max_buffers_} * buffer_size_, data_)) < 0) return rc;
  if ((rc = Mapping::anonymous(size_t{max_buffers_} * sizeof(uint32_t), offsets_)) < 0) return rc;
  grow();
  return 0;
}

// A ring with an entry for each buffer of `buffer_size` the pool can hold, no more: the tail walks
// every entry in turn, so entries no buffer can fill would still become resident (448 KiB of
// 32768 where 4096 buffers of 64 KiB fill the pool).
int BufferRing::register_ring(Ring& ring, unsigned max_buffers, unsigned buffer_size, uint16_t flags) {
  buffer_size_ = buffer_size;
  max_buffers_ = std::min<unsigned>(max_buffers, kPoolReserve / buffer_size);
  entries_ = std::bit_ceil(max_buffers_);
  size_t ring_bytes = (entries_ * sizeof(io_uring_buf) + 4095) & ~size_t{4095};
  if (int rc = Mapping::anonymous(ring_bytes, ring_memory_); rc < 0) return rc;
  ring_ = reinterpret_cast<io_uring_buf_ring*>(ring_memory_.get());
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<uint64_t>(ring_);
  reg.ring_entries = entries_;
  reg.bgid = kGroup;
  set_flags(reg, flags);
  return ring.register_op(IORING_REGISTER_PBUF_RING, &reg, 1);
}

void BufferRing::add(unsigned id) {
  // Not ring_->bufs: in C++, older uapi headers' __DECLARE_FLEX_ARRAY wraps the array in a struct
  // with an empty member, which C++ gives size 1, so `bufs` lands at offset 8 instead of 0 and the
  // kernel never sees the buffers (every recv fails with ENOBUFS). The layout is an array of
  // io_uring_buf from offset 0 whose first `resv` is the tail.
  io_uring_buf& buf = reinterpret_cast<io_uring_buf*>(ring_memory_.get())[tail_ & (entries_ - 1)];
  buf.addr = reinterpret_cast<uint64_t>(data_.get() + size_t{id} * buffer_size_);
  buf.len = buffer_size_;
  buf.bid = static_cast<uint16_t>(id);
  ++tail_;
}

const uint8_t* BufferRing::received(const io_uring_cqe& cqe) const {
  unsigned id = buffer_id(cqe);
  const uint8_t* start = data_.get() + size_t{id} * buffer_size_;
  return incremental_ ? start + reinterpret_cast<const uint32_t*>(offsets_.get())[id] : start;
}

void BufferRing::release(const io_uring_cqe& cqe) {
  if (!(cqe.flags & IORING_CQE_F_BUFFER)) return;
  unsigned id = buffer_id(cqe);
  if (id >= provided_) return;
  if (incremental_) {
    uint32_t& offset = reinterpret_cast<uint32_t*>(offsets_.get())[id];
    if (cqe.flags & kCqeBufferMore) {  // the kernel goes on filling it from there
      offset += static_cast<uint32_t>(cqe.res);
      return;
    }
    offset = 0;
  }
  add(id);
  __atomic_store_n(&ring_->tail, tail_, __ATOMIC_RELEASE);
}

bool BufferRing::grow() {
  if (provided_ >= max_buffers_) return false;
  unsigned target = provided_ == 0 ? std::max(1U, kInitialBytes / buffer_size_) : provided_ * 2;
  if (target > max_buffers_) target = max_buffers_;
  for (unsigned id = provided_; id < target; ++id) add(id);
  provided_ = target;
  __atomic_store_n(&ring_->tail, tail_, __ATOMIC_RELEASE);
  return true;
}

}  // namespace twinloop
