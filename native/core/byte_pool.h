// Memory that an operation in flight owns, so that neither the kernel nor a pool thread ever
// touches memory JavaScript can free, transfer or shrink (DESIGN.md, "The boundary"). N-API cannot
// pin an ArrayBuffer's backing store, so an asynchronous write is copied in when it is submitted
// and an asynchronous read lands here and is copied out when it completes.
//
// Blocks of up to 64 KiB are recycled through per-size free lists: a busy connection reuses the
// same few blocks instead of calling the allocator for every operation. Larger blocks go straight
// to the allocator, which maps them lazily, so a 1 GiB read buffer costs only the pages the
// kernel fills.
//
// Every block is aligned to its own size, up to a page: a file opened with `direct: true`
// (O_DIRECT) hands this memory to the kernel, which refuses with EINVAL a buffer not aligned to
// the device's logical block, 512 B to 4 KiB (open(2), "O_DIRECT"); `new uint8_t[]` promises only
// 16 bytes. Aligning a block to its size wastes at most its size in malloc's gaps, and only the
// gaps: 4 KiB for every 512 B block would have spread a busy pool over eight times the memory.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#if defined(_WIN32)
#include <malloc.h>
#endif
#include <memory>
#include <span>
#include <vector>

#include "limits.h"

namespace twinloop {

// Operations a backend gave up waiting for at teardown (a thread stuck in uninterruptible I/O, a
// kernel request that outlived the bound): they may still write into their memory, which must
// therefore never be freed. The binding compares this count across a backend's destruction and,
// if it grew, leaks the memory of every operation that was in flight rather than risk that.
inline std::atomic<uint64_t> abandoned_operations{0};

class BytePool;

inline constexpr size_t kMaxBlockAlignment = 4096;

// Aligned memory whose release needs no alignment, so the owner stays one pointer wide: C's
// aligned_alloc and free, or on Windows, whose C runtime has no aligned_alloc (its free could not
// release such a block), _aligned_malloc and _aligned_free.
inline void* aligned_bytes(size_t alignment, size_t size) {
#if defined(_WIN32)
  return _aligned_malloc(size, alignment);
#else
  return std::aligned_alloc(alignment, size);
#endif
}
struct FreeBytes {
  void operator()(uint8_t* data) const {
#if defined(_WIN32)
    _aligned_free(data);
#else
    std::free(data);
#endif
  }
};
using AlignedBytes = std::unique_ptr<uint8_t, FreeBytes>;

// `size` bytes, not zeroed, aligned to a page or, if smaller, to the power of two at or below its size;
// null when memory is exhausted. Not an abort, as `new` would do in this -fno-exceptions build:
// the size is a JavaScript caller's (a read of up to kMaxTransfer), and a 1 GiB block is refused
// under RLIMIT_AS or with many such reads in flight, which must fail one operation, not the process.
inline AlignedBytes allocate_aligned(size_t size) {
  size_t alignment = kMaxBlockAlignment;
  while (alignment > alignof(std::max_align_t) && size < alignment) alignment /= 2;
  if (size > SIZE_MAX - alignment) return nullptr;  // no allocator has it, and the rounding would wrap
  size_t rounded = (std::max<size_t>(size, 1) + alignment - 1) / alignment * alignment;  // aligned_alloc's rule
  return AlignedBytes(static_cast<uint8_t*>(aligned_bytes(alignment, rounded)));
}

// A block from the pool, returned to it on destruction. Movable, not copyable. Empty (false)
// when default-made, moved from, or what acquire() gave when memory was exhausted.
class OwnedBytes {
 public:
  OwnedBytes() = default;
  OwnedBytes(OwnedBytes&& other) noexcept { *this = std::move(other); }
  OwnedBytes& operator=(OwnedBytes&& other) noexcept;
  ~OwnedBytes() { release(); }

  explicit operator bool() const { return data_ != nullptr; }

  std::span<uint8_t> span() const { return {data_.get(), size_}; }
  size_t size() const { return size_; }
  // Gives the memory up without freeing it (see abandoned_operations).
  void abandon() {
    static_cast<void>(data_.release());
    size_ = 0;
  }

 private:
  friend class BytePool;
  OwnedBytes(BytePool* pool, AlignedBytes data, size_t size, int size_class)
      : pool_(pool), data_(std::move(data)), size_(size), size_class_(size_class) {}
  void release();

  BytePool* pool_ = nullptr;
  AlignedBytes data_;
  size_t size_ = 0;
  int size_class_ = -1;  // -1: not recycled
};

class BytePool {
 public:
  // Memory of `size` bytes (at most kMaxTransfer), holding whatever it held before; or, when
  // memory is exhausted, an empty OwnedBytes, which the caller's operation fails with -ENOMEM.
  [[nodiscard]] OwnedBytes acquire(size_t size) {
    int size_class = class_of(size);
    if (size_class < 0) {
      AlignedBytes block = allocate_aligned(size);
      if (block == nullptr) return {};
      return OwnedBytes(this, std::move(block), size, -1);
    }
    auto& free = free_[static_cast<size_t>(size_class)];
    AlignedBytes block;
    if (!free.empty()) {
      block = std::move(free.back());
      free.pop_back();
    } else {
      // Zeroed once, when the pool grows: io_uring and IOCP write a read's bytes into it without
      // a syscall memcheck can follow, so a block that began uninitialised made the valgrind run
      // report the bytes a proactor read delivered (1 run in 3, by which block came back).
      block = allocate_aligned(class_size(size_class));
      if (block == nullptr) return {};
      std::fill_n(block.get(), class_size(size_class), uint8_t{0});
    }
    return OwnedBytes(this, std::move(block), size, size_class);
  }

  // A copy of `bytes`, or empty as acquire() is.
  [[nodiscard]] OwnedBytes copy_of(std::span<const uint8_t> bytes) {
    OwnedBytes owned = acquire(bytes.size());
    if (owned && !bytes.empty()) std::copy(bytes.begin(), bytes.end(), owned.span().begin());
    return owned;
  }

 private:
  friend class OwnedBytes;
  static constexpr size_t kSmallest = 512;
  static constexpr int kClasses = 8;  // 512 B … 64 KiB
  // Each class keeps up to 16 MiB of free blocks (and at least 4): what a busy loop had in
  // flight at its peak, bounded. With only 1 MiB, 100 proactor reads of 64 KiB in flight went to
  // malloc and page faults on every completion: +25 % CPU per round trip (measured).
  static constexpr size_t kFreeBytesPerClass = size_t{16} << 20;

  static size_t class_size(int size_class) { return kSmallest << size_class; }
  static int class_of(size_t size) {
    for (int size_class = 0; size_class < kClasses; ++size_class) {
      if (size <= class_size(size_class)) return size_class;
    }
    return -1;
  }

  void give_back(AlignedBytes block, int size_class) {
    auto& free = free_[static_cast<size_t>(size_class)];
    size_t limit = std::max<size_t>(4, kFreeBytesPerClass / class_size(size_class));
    if (free.size() < limit) free.push_back(std::move(block));
  }

  std::array<std::vector<AlignedBytes>, kClasses> free_;
};

inline OwnedBytes& OwnedBytes::operator=(OwnedBytes&& other) noexcept {
  if (this != &other) {
    release();
    pool_ = other.pool_;
    data_ = std::move(other.data_);
    size_ = other.size_;
    size_class_ = other.size_class_;
    other.pool_ = nullptr;
    other.size_ = 0;
    other.size_class_ = -1;
  }
  return *this;
}

inline void OwnedBytes::release() {
  if (data_ != nullptr && pool_ != nullptr && size_class_ >= 0) pool_->give_back(std::move(data_), size_class_);
  data_.reset();
  size_ = 0;
}

}  // namespace twinloop
