// Reactor interest: the directions of a socket that something waits to become ready. watch()
// takes the set JavaScript asks for; the backends keep the same type for what they registered
// with the kernel, so that one vocabulary is used everywhere (lib/binding.ts InterestBits mirrors
// the bit values).
#pragma once

#include <cstdint>

namespace twinloop {

enum class Interest : uint8_t { kNone = 0, kReadable = 1, kWritable = 2, kBoth = 3 };

constexpr Interest operator|(Interest a, Interest b) {
  return static_cast<Interest>(static_cast<uint8_t>(a) | static_cast<uint8_t>(b));
}
constexpr Interest operator&(Interest a, Interest b) {
  return static_cast<Interest>(static_cast<uint8_t>(a) & static_cast<uint8_t>(b));
}
// The complement within the two directions, so that `a & ~b` never holds a bit no direction has.
constexpr Interest operator~(Interest a) {
  return static_cast<Interest>(~static_cast<uint8_t>(a) & static_cast<uint8_t>(Interest::kBoth));
}
constexpr Interest& operator|=(Interest& a, Interest b) { return a = a | b; }
constexpr Interest& operator&=(Interest& a, Interest b) { return a = a & b; }

// Whether `set` holds any direction of `directions`.
constexpr bool has(Interest set, Interest directions) { return (set & directions) != Interest::kNone; }

// JavaScript's bits as a set; bits that name no direction are ignored, as they always were.
constexpr Interest interest_from_bits(uint32_t bits) {
  return static_cast<Interest>(bits & static_cast<uint32_t>(Interest::kBoth));
}

}  // namespace twinloop
