// Counter-based randomness (Philox4x32-10, Salmon et al. 2011): the uniform number used to
// pick token `step` of sample `sample_index` of the request whose key hashes to `stream` is a
// pure function of (seed, stream, sample_index, step). A sample therefore never depends on what
// else is in the batch, on its position in a file, on the tensor-parallel degree, or on where a
// job was restarted or a sequence preempted.
#pragma once

#include <cstdint>
#include <string_view>

#include "common/core/hash.h"

namespace dsmath {

// A request key's 64-bit stream id: FNV-1a over its bytes, then the SplitMix64 finalizer so that
// keys differing in one character land far apart. Stable across runs, machines and versions:
// batch jobs rely on it to resume a sample exactly.
inline uint64_t rng_stream_id(std::string_view key) {
  uint64_t h = kFnvOffset;
  for (unsigned char c : key) h = fnv1a_step(h, c);
  return mix64(h);
}

// Counter = (step, sample_index, stream); both step and sample_index stay below 2^32 (the
// context length and the samples per request are far smaller).
inline double philox_uniform(uint64_t seed, uint64_t stream, uint64_t sample_index, uint64_t step) {
  uint32_t c0 = uint32_t(step), c1 = uint32_t(sample_index);
  uint32_t c2 = uint32_t(stream), c3 = uint32_t(stream >> 32);
  uint32_t k0 = uint32_t(seed), k1 = uint32_t(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = uint64_t(0xD2511F53u) * c0;
    const uint64_t p1 = uint64_t(0xCD9E8D57u) * c2;
    const uint32_t n0 = uint32_t(p1 >> 32) ^ c1 ^ k0;
    const uint32_t n2 = uint32_t(p0 >> 32) ^ c3 ^ k1;
    c1 = uint32_t(p1);
    c3 = uint32_t(p0);
    c0 = n0;
    c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  // 53 random bits -> [0, 1)
  const uint64_t bits = (uint64_t(c0) << 21) | (uint64_t(c1) >> 11);
  return double(bits) * 0x1.0p-53;
}

}  // namespace dsmath
