// Slot table that maps HandleIds to a backend's per-socket state.
//
// A HandleId packs a slot index (low 20 bits) and the slot's generation (next 11 bits), so ids stay
// positive int32 for JavaScript and a stale id — kept after close — finds nothing instead of the
// state of a socket that reuses the slot. The generation wraps, so that is a matter of distance:
// freed slots wait in a first-in first-out queue and are reused only once kReuseDistance of them
// are free, so a stale id could alias only after 2^11 x 1024 closes (and lib/ refuses a closed
// handle before it reaches native code anyway). No allocation once the table has grown to the
// peak number of sockets plus that distance.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "backend.h"
#include "errors.h"

namespace twinloop {

// lib/ indexes its handle table by these bits too (lib/slot-map.ts, from the addon's constants).
inline constexpr uint32_t kHandleSlotBits = 20;

template <typename State>
class HandleTable {
 public:
  static constexpr uint32_t kSlotBits = kHandleSlotBits;
  static constexpr uint32_t kSlotMask = (1u << kSlotBits) - 1;
  static constexpr uint32_t kGenerationMask = (1u << (31 - kSlotBits)) - 1;
  static constexpr size_t kReuseDistance = 1024;

  // Returns the new handle, or -EMFILE when all 2^20 slots are in use (the state is dropped).
  HandleId insert(State state) {
    uint32_t slot;
    if (free_.size() >= kReuseDistance || (!free_.empty() && slot_count_ > kSlotMask)) {
      slot = free_.front();
      free_.pop_front();
    } else {
      if (slot_count_ > kSlotMask) return kEMFILE;
      slot = static_cast<uint32_t>(slot_count_++);
      if ((slot & kBlockMask) == 0) blocks_.push_back(std::make_unique<Slot[]>(kBlockSlots));
    }
    Slot& entry = at(slot);
    entry.state = std::move(state);
    entry.live = true;
    ++live_count_;
    return static_cast<HandleId>((entry.generation << kSlotBits) | slot);
  }

  // The state behind a live handle, or null for an unknown or stale one.
  State* find(HandleId handle) {
    if (handle < 0) return nullptr;
    uint32_t slot = static_cast<uint32_t>(handle) & kSlotMask;
    uint32_t generation = static_cast<uint32_t>(handle) >> kSlotBits;
    if (slot >= slot_count_) return nullptr;
    Slot& entry = at(slot);
    if (!entry.live || entry.generation != generation) return nullptr;
    return &entry.state;
  }

  // fn(state) for a live handle, -EBADF for an unknown or stale one: the first line of nearly
  // every operation on a handle.
  template <typename Fn>
  int with(HandleId handle, Fn&& fn) {
    State* state = find(handle);
    return state != nullptr ? fn(*state) : kEBADF;
  }

  void erase(HandleId handle) {
    uint32_t slot = static_cast<uint32_t>(handle) & kSlotMask;
    Slot& entry = at(slot);
    entry.state = State{};
    entry.live = false;
    entry.generation = (entry.generation + 1) & kGenerationMask;
    free_.push_back(slot);
    --live_count_;
  }

  size_t size() const { return live_count_; }

  template <typename Fn>
  void for_each(Fn&& fn) {
    for (uint32_t slot = 0; slot < slot_count_; ++slot) {
      Slot& entry = at(slot);
      if (entry.live) fn(static_cast<HandleId>((entry.generation << kSlotBits) | slot), entry.state);
    }
  }

 private:
  struct Slot {
    State state{};
    uint32_t generation = 0;
    bool live = false;
  };
  // The slots in blocks that never move, instead of one vector: growing a vector copies it into
  // one twice its size, and glibc keeps the old copy (freeing an mmap'd block raises its mmap
  // threshold to that size, so the next ones come from the heap and stay): ~100 bytes of RSS an
  // idle connection at 19 000 (the idle benchmark). A State& also stays valid across inserts.
  static constexpr uint32_t kBlockBits = 8;
  static constexpr uint32_t kBlockSlots = 1u << kBlockBits;
  static constexpr uint32_t kBlockMask = kBlockSlots - 1;
  Slot& at(uint32_t slot) { return blocks_[slot >> kBlockBits][slot & kBlockMask]; }
  std::vector<std::unique_ptr<Slot[]>> blocks_;
  size_t slot_count_ = 0;
  std::deque<uint32_t> free_;
  size_t live_count_ = 0;
};

}  // namespace twinloop
