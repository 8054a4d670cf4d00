// The vocabulary-wide passes of token sampling, over one row of f32 logits (worker/engine/
// sampler.cpp builds the sampler from them):
//
//   argmax_finite:  i* = the first index of max_i z_i (torch.argmax's choice on ties), and
//                   whether every z_i is finite
//   exp_shifted:    p_i = e^((z_i - m) s) for z_i <= m (s > 0), clamped below at e^-86;
//                   returns sum_i p_i
//   mask_kept:      out_i = p_i if p_i >= floor and (p_i > cut_p or (p_i == cut_p and
//                   i <= cut_i)), else 0; returns sum_i out_i
//
// e^x is a degree-6 Taylor polynomial of e^g with x = n ln2 + g, |g| <= ln2/2 (ln 2 split in two
// so g is exact), and 2^n put into the exponent bits: relative error below 5e-7 (libm's expf is a
// call per element). Sums run in a fixed order per path (lane-wise partial sums, then the lanes in
// order). Each pass has an AVX-512, an AVX2 and a portable path chosen at run time, and a plain
// reference the tests compare them with.
#pragma once

#include <cstdint>

#include "kernels/cpu/simd.h"

namespace dsmath::cpu {

struct RowArgmax {
  int64_t index;
  bool finite;
};

RowArgmax argmax_finite(const float* z, int64_t n);
double exp_shifted(const float* z, int64_t n, float max, float scale, float* p);
double mask_kept(const float* p, int64_t n, float floor, float cut_p, int64_t cut_i, float* out);

// The same on a given instruction-set tier (for the tests), and the plain references.
RowArgmax argmax_finite_on(detail::Isa isa, const float* z, int64_t n);
double exp_shifted_on(detail::Isa isa, const float* z, int64_t n, float max, float scale, float* p);
double mask_kept_on(detail::Isa isa, const float* p, int64_t n, float floor, float cut_p,
                    int64_t cut_i, float* out);
RowArgmax argmax_finite_reference(const float* z, int64_t n);
double exp_shifted_reference(const float* z, int64_t n, float max, float scale, float* p);
double mask_kept_reference(const float* p, int64_t n, float floor, float cut_p, int64_t cut_i,
                           float* out);

}  // namespace dsmath::cpu
