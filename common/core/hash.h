// Stable 64-bit hashing for keys that must never change between runs, machines or versions
// (random-stream ids of request keys, prefix-cache block hashes). Not cryptographic.
#pragma once

#include <cstdint>

namespace dsmath {

// FNV-1a: one step of folding a value into a running hash (start from kFnvOffset).
constexpr uint64_t kFnvOffset = 0xCBF29CE484222325ull;
constexpr uint64_t fnv1a_step(uint64_t h, uint64_t value) {
  return (h ^ value) * 0x100000001B3ull;
}

// The SplitMix64 finalizer: spreads every input bit over the whole word, so inputs differing in
// one bit land far apart.
constexpr uint64_t mix64(uint64_t h) {
  h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9ull;
  h = (h ^ (h >> 27)) * 0x94D049BB133111EBull;
  return h ^ (h >> 31);
}

}  // namespace dsmath
