// A listener's queued accepts (SocketOperations::accepts): first in, first out — a connection
// goes to the oldest accept still wanted — and any one of them also leaves by its op_id when it
// is cancelled. In a std::vector that cancel was O(N) twice over, a scan for the id and an erase
// that moved every entry behind it, so N queued accepts cancelled one by one cost O(N^2): 100k
// on epoll took 4.1 s in cancel() alone, 1M would take minutes. Here an entry that leaves is
// marked gone, trimmed at once at either end, and dropped from the middle once the gone outnumber
// the live or a push finds the end full (memory stays within twice the most ever queued); the id
// is found through a hash index, built at the first lookup (most listeners never cancel one) and
// kept from then on. Every operation is O(1) amortised.
//
// Every socket carries one, and only a listener fills it: inline it is a pointer and a count
// (16 bytes, where the vector took 24); the entries and their index live behind the pointer,
// allocated at the first push.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <utility>

namespace twinloop {

struct QueuedAccept {
  int32_t op_id;
  bool cancelled = false;  // cancel() came while the kernel held every queued accept
};

class AcceptQueue {
 public:
  AcceptQueue() = default;
  AcceptQueue(AcceptQueue&& other) noexcept : storage_(std::move(other.storage_)), size_(std::exchange(other.size_, 0)) {}
  AcceptQueue& operator=(AcceptQueue&& other) noexcept {
    storage_ = std::move(other.storage_);
    size_ = std::exchange(other.size_, 0);
    return *this;
  }

  bool empty() const { return size_ == 0; }
  size_t size() const { return size_; }

  void push_back(QueuedAccept accept) {
    if (!storage_) storage_ = std::make_unique<Storage>();
    Storage& s = *storage_;
    if (s.end == s.capacity) make_room();
    uint32_t position = s.end++;
    s.slots[position] = {accept, false};
    ++size_;
    if (s.index) index_insert(position);
  }
  // The oldest, or null.
  QueuedAccept* front() { return empty() ? nullptr : &storage_->slots[storage_->head].accept; }
  // Removes the newest (an accept its backend could not start).
  void pop_back() { erase(&storage_->slots[storage_->end - 1].accept); }
  // Removes the oldest and returns its op_id, or -1 when none is queued.
  int32_t pop_front() {
    QueuedAccept* oldest = front();
    if (oldest == nullptr) return -1;
    int32_t op_id = oldest->op_id;
    erase(oldest);
    return op_id;
  }
  // The oldest for which `match` holds, or null.
  template <typename Match>
  QueuedAccept* first_where(Match match) {
    if (empty()) return nullptr;
    Storage& s = *storage_;
    for (uint32_t p = s.head; p < s.end; ++p) {
      if (!s.slots[p].gone && match(s.slots[p].accept)) return &s.slots[p].accept;
    }
    return nullptr;
  }
  // The accept queued as `op_id`, or null.
  QueuedAccept* find(int32_t op_id) {
    if (empty()) return nullptr;
    Storage& s = *storage_;
    if (!s.index) rebuild_index();
    for (uint32_t i = hash(op_id) & s.index_mask;; i = (i + 1) & s.index_mask) {
      uint32_t entry = s.index[i];
      if (entry == kFree) return nullptr;
      uint32_t p = entry - 1;
      if (live(p) && s.slots[p].accept.op_id == op_id) return &s.slots[p].accept;
    }
  }
  // Removes an accept that front(), first_where() or find() returned.
  void erase(QueuedAccept* accept) {
    reinterpret_cast<Slot*>(accept)->gone = true;  // Slot is standard-layout, `accept` its first member
    --size_;
    trim();
  }
  // Visits every accept, oldest first, and removes those `remove` returns true for.
  template <typename Remove>
  void erase_if(Remove remove) {
    if (empty()) return;
    Storage& s = *storage_;
    for (uint32_t p = s.head; p < s.end; ++p) {
      if (!s.slots[p].gone && remove(std::as_const(s.slots[p].accept))) {
        s.slots[p].gone = true;
        --size_;
      }
    }
    trim();
  }

 private:
  struct Slot {
    QueuedAccept accept;
    bool gone;
  };
  static_assert(std::is_standard_layout_v<Slot> && offsetof(Slot, accept) == 0);
  static_assert(std::is_trivially_destructible_v<Slot>, "slots are reused, never destroyed");

  // The index's entries are positions + 1, kFree for none. Its chains never break: an entry is
  // never freed but only rebuilt, and one whose position holds another accept since (or none)
  // is passed over by find() and taken again by the next insert.
  static constexpr uint32_t kFree = 0;

  struct Storage {
    std::unique_ptr<Slot[]> slots;
    uint32_t head = 0;  // slots[head] and slots[end - 1] are live, unless head == end
    uint32_t end = 0;
    uint32_t capacity = 0;
    std::unique_ptr<uint32_t[]> index;  // open addressing by hash(op_id), never more than half used
    uint32_t index_mask = 0;
    uint32_t index_used = 0;  // entries not kFree
  };

  static uint32_t hash(int32_t op_id) {
    // lib/ makes an id of a dense slot and a generation: mixed, so that neither clusters.
    auto x = static_cast<uint32_t>(op_id);
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    return x ^ (x >> 16);
  }

  bool live(uint32_t p) const { return p >= storage_->head && p < storage_->end && !storage_->slots[p].gone; }

  // Gone entries are trimmed at both ends; between them they are dropped once they outnumber the
  // live ones, so that a scan (first_where, erase_if) passes O(size()) of them at most. Each
  // drop costs what the removals since the last one paid for.
  void trim() {
    Storage& s = *storage_;
    while (s.head < s.end && s.slots[s.head].gone) ++s.head;
    while (s.end > s.head && s.slots[s.end - 1].gone) --s.end;
    if (s.head == s.end) {
      s.head = s.end = 0;
    } else if (s.end - s.head - size_ > size_ + 32) {
      move_live_to(s.slots.get());
      if (s.index) rebuild_index();
    }
  }

  // The end is full: the live entries move to the front of the same slots when at most half
  // are live, else to twice as many.
  void make_room() {
    Storage& s = *storage_;
    if (s.capacity > 0 && size_ <= s.capacity / 2) {
      move_live_to(s.slots.get());
    } else {
      uint32_t capacity = s.capacity == 0 ? 4 : s.capacity * 2;
      auto grown = std::make_unique_for_overwrite<Slot[]>(capacity);
      move_live_to(grown.get());
      s.slots = std::move(grown);
      s.capacity = capacity;
    }
    if (s.index) rebuild_index();
  }

  // The live entries, in order, to the front of `to`: the same slots or new ones, which the
  // caller then makes the queue's and reindexes.
  void move_live_to(Slot* to) {
    Storage& s = *storage_;
    uint32_t count = 0;
    for (uint32_t p = s.head; p < s.end; ++p) {
      if (!s.slots[p].gone) to[count++] = s.slots[p];
    }
    s.head = 0;
    s.end = count;
  }

  void rebuild_index() {
    Storage& s = *storage_;
    size_t capacity = 16;
    while (capacity < size_t{4} * size_) capacity *= 2;
    if (capacity != size_t{s.index_mask} + 1 || !s.index) {
      s.index = std::make_unique_for_overwrite<uint32_t[]>(capacity);
      s.index_mask = static_cast<uint32_t>(capacity - 1);
    }
    std::fill_n(s.index.get(), capacity, kFree);
    s.index_used = 0;
    for (uint32_t p = s.head; p < s.end; ++p) {
      if (!s.slots[p].gone) index_place(p);
    }
  }

  void index_insert(uint32_t position) {
    Storage& s = *storage_;
    if (s.index_used + 1 > (s.index_mask + 1) / 2) return rebuild_index();  // places `position` too
    index_place(position);
  }

  void index_place(uint32_t position) {
    Storage& s = *storage_;
    for (uint32_t i = hash(s.slots[position].accept.op_id) & s.index_mask;; i = (i + 1) & s.index_mask) {
      uint32_t entry = s.index[i];
      if (entry == kFree) ++s.index_used;
      else if (live(entry - 1)) continue;
      s.index[i] = position + 1;
      return;
    }
  }

  std::unique_ptr<Storage> storage_;
  uint32_t size_ = 0;
};

}  // namespace twinloop
