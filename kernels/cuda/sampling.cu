// Token sampling, one block per sampled row of f32 logits z over the vocabulary (V tokens), as
// worker/engine/sampler.cpp does it on the host:
//
//   penalties     for each listed token t: z_t = z_t > 0 ? f32(z_t / rp) : f32(z_t * rp) (f64
//                 arithmetic), then z_t -= s_t (s_t = f32(frequency x count + presence))
//   greedy        i* = the first index of max_i z_i (torch.argmax)
//   probabilities p_i = e^max((z_i - max z) s, -86), s = f32(1 / T): the top token has p = 1
//   truncation    tokens ranked by p descending, then by id ascending. top_k keeps the first k;
//                 top_p the shortest prefix (of those k when top_k is set) whose mass reaches
//                 top_p times the mass it ranks; min_p keeps p_i >= min_p. A cut (c, p_c)
//                 keeps i when p_i > p_c or (p_i == p_c and i <= c).
//   draw          with u the host's Philox uniform: the first kept i (in id order) with
//                 sum_{kept j <= i} p_j > u sum_{kept j} p_j
//   logprob       log_softmax(raw z)_t = z_t - (m + ln sum_i e^max(z_i - m, -86)), m = max z
//   top_logprobs  the k best raw logits (z descending, id ascending), each with its logprob
//
// A non-finite raw logit, then a non-finite penalized one, makes the row an error naming the
// first such token (the host's checked_argmax).
//
// Placeholders (the engine's overlap): ids[i] = outcomes[-1 - ids[i]].token where ids[i] < 0.
//
// No sort of the vocabulary. The k-th token (top_k, top_logprobs) and the token where the
// nucleus mass is reached (top_p) come from a radix select over keys (a float's bits mapped so
// that they order as the float): four passes of 8-bit digits, each a shared-memory histogram
// of counts (and masses) over the tokens whose key matches the digits chosen so far and a walk
// down from the top digit; then one pass over the tokens with the chosen key finds the one of
// the wanted rank in id order. Masses are fixed point, p x 2^32 rounded, summed in 64-bit
// integers: exact, so they do not depend on the order threads add them (every run draws the
// same token) and the draw's prefix sums agree with the totals it chose by. Against the host's
// f32/f64 sums they differ by far less than 1e-6 of the mass: a token can differ only where u
// or top_p falls that close to a boundary between two tokens. e^x is expf (full precision), the
// host's is a polynomial within 5e-7: probabilities agree to about 1e-6, so only tokens whose
// probabilities are that close could swap rank.
#include <cmath>
#include <cstdint>

#include "common/core/error.h"
#include "kernels/cuda/sampling.h"

namespace dsmath::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFull = 0xFFFFFFFFu;
constexpr float kMinExponent = -86.0f;       // e^-86 ~ 4e-38, as the host clamps
constexpr double kMassScale = 4294967296.0;  // 2^32
constexpr int32_t kNone = INT32_MAX;

using u64 = unsigned long long;

struct Shared {
  unsigned counts[256];
  u64 mass[256];
  u64 warp_u64[kWarps];
  double warp_f64[kWarps];
  float warp_value[kWarps];
  int32_t warp_index[kWarps];
  int32_t warp_bad[kWarps];
  // radix select (thread 0 writes, every thread reads after a barrier)
  uint32_t sel_prefix;
  int32_t sel_reached;
  u64 sel_rank;        // count mode: the rank still wanted; then the rank among the ties
  u64 sel_above_mass;  // mass mode: mass of the candidates ranked above the current digit
  u64 sel_ties;        // candidates with the chosen key
  // the draw
  int32_t draw_warp;
  u64 draw_base;
  double draw_target;
  int32_t found;  // a token found by ordered_matches or the draw
  // top_logprobs
  int32_t top_n;
  int32_t top_tokens[kMaxTopLogprobs];
};

__device__ int lane_id() {
  return int(threadIdx.x) & 31;
}
__device__ int warp_id() {
  return int(threadIdx.x) >> 5;
}

// A float's bits, mapped so that unsigned order is the float's order (-0 counts as +0).
__device__ uint32_t ordered_key(float x) {
  if (x == 0.0f) x = 0.0f;
  const uint32_t u = __float_as_uint(x);
  return (u & 0x80000000u) != 0 ? ~u : (u | 0x80000000u);
}

__device__ float key_value(uint32_t key) {
  return __uint_as_float((key & 0x80000000u) != 0 ? (key & 0x7FFFFFFFu) : ~key);
}

// A probability as fixed point (p in [0, 1]).
__device__ u64 fixed_mass(float p) {
  return __double2ull_rn(double(p) * kMassScale);
}

// Which tokens a truncation keeps: i with p_i > prob, or p_i == prob and i <= token; token -1
// keeps all (the host's TruncationCutoff::keeps).
struct Cut {
  int32_t token = -1;
  float prob = 0;
  __device__ bool keeps(int64_t i, float p) const {
    return token < 0 || p > prob || (p == prob && i <= token);
  }
};

// The block's sum, each thread's part then fixed trees: the same bits every run; every thread
// gets it. `scratch`: kWarps values in shared memory.
template <typename T>
__device__ T block_sum(T v, T* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  if (lane_id() == 0) scratch[warp_id()] = v;
  __syncthreads();
  T total = 0;
  for (int w = 0; w < kWarps; ++w) total += scratch[w];
  __syncthreads();
  return total;
}

struct RowScan {
  float max;      // over the finite values
  int32_t index;  // the first index of the max
  int32_t bad;    // the first non-finite index, kNone when all are finite
};

// max, first argmax and first non-finite index of z[0, n); every thread gets them.
__device__ RowScan scan_row(const float* z, int64_t n, Shared& sh) {
  float best = -INFINITY;
  int32_t at = kNone, bad = kNone;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    const float x = z[i];
    if (!isfinite(x)) {
      if (bad == kNone) bad = int32_t(i);
    } else if (x > best || at == kNone) {
      best = x;
      at = int32_t(i);
    }
  }
  auto merge = [&](float other, int32_t other_at, int32_t other_bad) {
    if (other_at != kNone && (at == kNone || other > best || (other == best && other_at < at))) {
      best = other;
      at = other_at;
    }
    bad = min(bad, other_bad);
  };
  for (int o = 16; o > 0; o >>= 1) {
    const float b = __shfl_xor_sync(kFull, best, o);
    const int32_t a = __shfl_xor_sync(kFull, at, o);
    const int32_t d = __shfl_xor_sync(kFull, bad, o);
    merge(b, a, d);
  }
  if (lane_id() == 0) {
    sh.warp_value[warp_id()] = best;
    sh.warp_index[warp_id()] = at;
    sh.warp_bad[warp_id()] = bad;
  }
  __syncthreads();
  best = -INFINITY;
  at = kNone;
  bad = kNone;
  for (int w = 0; w < kWarps; ++w) merge(sh.warp_value[w], sh.warp_index[w], sh.warp_bad[w]);
  __syncthreads();
  return {best, at, bad};
}

// Tokens [begin, end) of warp w: consecutive ranges in multiples of 32, in warp order.
struct WarpRange {
  int64_t begin, end;
};
__device__ WarpRange warp_range(int64_t n, int w) {
  const int64_t span = ((n + kWarps - 1) / kWarps + 31) / 32 * 32;
  const int64_t begin = min(n, int64_t(w) * span);
  return {begin, min(n, begin + span)};
}

// The ids of the tokens i < n with match(i) whose rank among them (0-based, id order) is in
// [lo, hi), into out[rank - lo]. Every thread calls it.
template <typename Match>
__device__ void ordered_matches(int64_t n, Match match, u64 lo, u64 hi, int32_t* out, Shared& sh) {
  const WarpRange range = warp_range(n, warp_id());
  const unsigned below = (1u << lane_id()) - 1u;
  u64 count = 0;
  for (int64_t b = range.begin; b < range.end; b += 32) {
    const int64_t i = b + lane_id();
    count += __popc(__ballot_sync(kFull, i < range.end && match(i)));
  }
  if (lane_id() == 0) sh.warp_u64[warp_id()] = count;
  __syncthreads();
  u64 base = 0;
  for (int w = 0; w < warp_id(); ++w) base += sh.warp_u64[w];
  if (base < hi && base + count > lo) {
    for (int64_t b = range.begin; b < range.end && base < hi; b += 32) {
      const int64_t i = b + lane_id();
      const bool m = i < range.end && match(i);
      const unsigned ballot = __ballot_sync(kFull, m);
      if (m) {
        const u64 rank = base + u64(__popc(ballot & below));
        if (rank >= lo && rank < hi) out[rank - lo] = int32_t(i);
      }
      base += u64(__popc(ballot));
    }
  }
  __syncthreads();
}

struct Selected {
  bool reached;  // mass mode: false when the candidates' mass falls short of `need`
  uint32_t key;
  u64 rank;  // 1-based, among the candidates with `key`, in id order
};

// Radix select over the candidates ranked by key descending, then id ascending. Count mode
// (by_mass false): the k-th candidate (1 <= k <= candidates). Mass mode: the candidate at
// which the running mass first reaches `need` (> 0). key_of(i): token i's key;
// candidate(i, key): whether it takes part. Every thread calls it.
template <typename KeyOf, typename Candidate>
__device__ Selected radix_select(int64_t n, KeyOf key_of, Candidate candidate, bool by_mass, u64 k,
                                 double need, Shared& sh) {
  if (threadIdx.x == 0) {
    sh.sel_prefix = 0;
    sh.sel_reached = 1;
    sh.sel_rank = k;
    sh.sel_above_mass = 0;
    sh.sel_ties = 0;
  }
  uint32_t mask = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int d = int(threadIdx.x); d < 256; d += kThreads) {
      sh.counts[d] = 0;
      sh.mass[d] = 0;
    }
    __syncthreads();
    const uint32_t prefix = sh.sel_prefix;
    for (int64_t i = threadIdx.x; i < n; i += kThreads) {
      const uint32_t key = key_of(i);
      if ((key & mask) != prefix || !candidate(i, key)) continue;
      const unsigned d = (key >> shift) & 255u;
      atomicAdd(&sh.counts[d], 1u);
      if (by_mass) atomicAdd(&sh.mass[d], fixed_mass(key_value(key)));
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int d = 255;
      for (; d >= 0; --d) {
        if (by_mass) {
          if (double(sh.sel_above_mass + sh.mass[d]) >= need) break;
          sh.sel_above_mass += sh.mass[d];
        } else {
          if (u64(sh.counts[d]) >= sh.sel_rank) break;
          sh.sel_rank -= sh.counts[d];
        }
      }
      if (d < 0) {
        sh.sel_reached = 0;
      } else {
        sh.sel_prefix = prefix | (uint32_t(d) << shift);
        sh.sel_ties = sh.counts[d];
      }
    }
    __syncthreads();
    if (sh.sel_reached == 0) break;
    mask |= 255u << shift;
  }
  if (threadIdx.x == 0 && by_mass && sh.sel_reached != 0) {
    // The tokens with the chosen key all have the same mass: the first j of them (id order)
    // with above + j x mass >= need, at least one.
    const u64 above = sh.sel_above_mass, ties = sh.sel_ties;
    const u64 each = fixed_mass(key_value(sh.sel_prefix));
    u64 j = 1;
    if (each > 0) {
      const double r = ceil((need - double(above)) / double(each));
      j = r < 1.0 ? 1 : (r > double(ties) ? ties : u64(r));
      while (j > 1 && double(above + (j - 1) * each) >= need) --j;
      while (j < ties && double(above + j * each) < need) ++j;
    }
    sh.sel_rank = j;
  }
  __syncthreads();
  const Selected out{sh.sel_reached != 0, sh.sel_prefix, sh.sel_rank};
  __syncthreads();
  return out;
}

// The cut at the selected candidate of probabilities `prob`: its key and, among the candidates
// with that key, the token of its rank.
template <typename Candidate>
__device__ Cut cut_at(const float* prob, int64_t n, Candidate candidate, const Selected& s,
                      Shared& sh) {
  const uint32_t key = s.key;
  ordered_matches(
      n,
      [&](int64_t i) {
        const uint32_t k = ordered_key(prob[i]);
        return k == key && candidate(i, k);
      },
      s.rank - 1, s.rank, &sh.found, sh);
  Cut cut;
  cut.token = sh.found;
  cut.prob = key_value(key);
  __syncthreads();
  return cut;
}

// top_k, then top_p, over the probabilities (host: truncation_cutoff).
__device__ Cut truncation(const float* prob, int64_t n, int64_t top_k, double top_p, Shared& sh) {
  auto key_of = [&](int64_t i) { return ordered_key(prob[i]); };
  auto all = [](int64_t, uint32_t) { return true; };
  if (top_k > 0) {
    const Selected kth = radix_select(n, key_of, all, false, u64(top_k), 0.0, sh);
    const Cut k_cut = cut_at(prob, n, all, kth, sh);
    if (top_p >= 1.0) return k_cut;
    auto in_k = [&](int64_t i, uint32_t key) { return k_cut.keeps(i, key_value(key)); };
    u64 mass = 0;
    for (int64_t i = threadIdx.x; i < n; i += kThreads)
      if (k_cut.keeps(i, prob[i])) mass += fixed_mass(prob[i]);
    const double need = top_p * double(block_sum(mass, sh.warp_u64));
    const Selected nucleus = radix_select(n, key_of, in_k, true, 0, need, sh);
    if (!nucleus.reached) return k_cut;  // rounding: all k
    return cut_at(prob, n, in_k, nucleus, sh);
  }
  if (top_p >= 1.0) return Cut{};
  u64 mass = 0;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) mass += fixed_mass(prob[i]);
  const double need = top_p * double(block_sum(mass, sh.warp_u64));
  const Selected nucleus = radix_select(n, key_of, all, true, 0, need, sh);
  if (!nucleus.reached) return Cut{};  // rounding: the whole vocabulary
  return cut_at(prob, n, all, nucleus, sh);
}

// The draw: the first kept token (id order) whose running mass exceeds u times the kept mass.
__device__ int32_t draw(const float* prob, int64_t n, const Cut& cut, float min_p, double u,
                        Shared& sh) {
  auto kept_mass = [&](int64_t i) -> u64 {
    const float p = prob[i];
    return p >= min_p && cut.keeps(i, p) ? fixed_mass(p) : 0;
  };
  const WarpRange range = warp_range(n, warp_id());
  u64 sum = 0;
  int32_t last = -1;  // the last token with kept mass in this lane's share
  for (int64_t i = range.begin + lane_id(); i < range.end; i += 32) {
    const u64 m = kept_mass(i);
    sum += m;
    if (m > 0) last = int32_t(i);
  }
  for (int o = 16; o > 0; o >>= 1) {
    sum += __shfl_xor_sync(kFull, sum, o);
    last = max(last, __shfl_xor_sync(kFull, last, o));
  }
  if (lane_id() == 0) {
    sh.warp_u64[warp_id()] = sum;
    sh.warp_index[warp_id()] = last;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    u64 total = 0;
    int32_t last_kept = -1;
    for (int w = 0; w < kWarps; ++w) {
      total += sh.warp_u64[w];
      last_kept = max(last_kept, sh.warp_index[w]);
    }
    const double target = u * double(total);
    sh.draw_warp = -1;
    sh.draw_base = 0;
    sh.draw_target = target;
    sh.found = last_kept;  // rounding left the target past the end
    u64 base = 0;
    for (int w = 0; w < kWarps; ++w) {
      if (double(base + sh.warp_u64[w]) > target) {
        sh.draw_warp = w;
        sh.draw_base = base;
        sh.found = sh.warp_index[w];
        break;
      }
      base += sh.warp_u64[w];
    }
  }
  __syncthreads();
  if (warp_id() == sh.draw_warp) {
    const double target = sh.draw_target;
    u64 base = sh.draw_base;
    for (int64_t b = range.begin; b < range.end; b += 32) {
      const int64_t i = b + lane_id();
      const u64 m = i < range.end ? kept_mass(i) : 0;
      u64 running = m;  // inclusive prefix sum over the lanes
      for (int o = 1; o < 32; o <<= 1) {
        const u64 y = __shfl_up_sync(kFull, running, o);
        if (lane_id() >= o) running += y;
      }
      const unsigned crossed = __ballot_sync(kFull, i<range.end&& double(base + running)> target);
      if (crossed != 0) {
        if (lane_id() == __ffs(crossed) - 1) sh.found = int32_t(i);
        break;
      }
      base += __shfl_sync(kFull, running, 31);
    }
  }
  __syncthreads();
  const int32_t token = sh.found;
  __syncthreads();
  return token;
}

// The best k raw logits (z descending, id ascending) into sh.top_tokens, best first.
__device__ void top_tokens(const float* z, int64_t n, int k, Shared& sh) {
  auto key_of = [&](int64_t i) { return ordered_key(z[i]); };
  auto all = [](int64_t, uint32_t) { return true; };
  const Selected kth = radix_select(n, key_of, all, false, u64(k), 0.0, sh);
  if (threadIdx.x == 0) sh.top_n = 0;
  __syncthreads();
  for (int64_t i = threadIdx.x; i < n; i += kThreads)
    if (key_of(i) > kth.key) sh.top_tokens[atomicAdd(&sh.top_n, 1)] = int32_t(i);  // < k of them
  __syncthreads();
  const int above = sh.top_n;
  __syncthreads();
  ordered_matches(
      n, [&](int64_t i) { return key_of(i) == kth.key; }, 0, kth.rank, sh.top_tokens + above, sh);
  if (threadIdx.x == 0) {
    // Insertion sort of the k (at most 20) by key descending, then id ascending.
    for (int a = 1; a < k; ++a) {
      const int32_t t = sh.top_tokens[a];
      const uint32_t key = key_of(t);
      int b = a;
      for (; b > 0; --b) {
        const int32_t s = sh.top_tokens[b - 1];
        const uint32_t sk = key_of(s);
        if (sk > key || (sk == key && s < t)) break;
        sh.top_tokens[b] = s;
      }
      sh.top_tokens[b] = t;
    }
  }
  __syncthreads();
}

__global__ void __launch_bounds__(kThreads)
    sample_kernel(const float* logits, int64_t vocab, const SampleRowParams* all_params,
                  const PenaltyEntry* penalties, float* work, SampleRowOutcome* outcomes) {
  __shared__ Shared sh;
  const SampleRowParams p = all_params[blockIdx.x];
  SampleRowOutcome* out = outcomes + blockIdx.x;
  const float* raw = logits + p.row * vocab;
  float* w = p.work >= 0 ? work + p.work * vocab : nullptr;
  auto fail_row = [&](int32_t bad, float value) {
    if (threadIdx.x != 0) return;
    out->token = -1;
    out->logprob = 0;
    out->status = kNonFiniteLogit;
    out->bad_token = bad;
    out->bad_value = value;
    out->top_count = 0;
  };

  const RowScan raw_scan = scan_row(raw, vocab, sh);
  if (raw_scan.bad != kNone) return fail_row(raw_scan.bad, raw[raw_scan.bad]);
  const float* z = raw;
  RowScan z_scan = raw_scan;
  if (p.penalty_count > 0) {
    for (int64_t i = threadIdx.x; i < vocab; i += kThreads) w[i] = raw[i];
    __syncthreads();
    for (int e = int(threadIdx.x); e < p.penalty_count; e += kThreads) {
      const PenaltyEntry pe = penalties[p.penalty_begin + e];
      float v = w[pe.token];
      if (pe.repeat != 0)
        v = v > 0 ? float(double(v) / p.repetition_penalty)
                  : float(double(v) * p.repetition_penalty);
      if (pe.subtracted != 0) v -= pe.subtract;
      w[pe.token] = v;
    }
    __syncthreads();
    z = w;
    z_scan = scan_row(w, vocab, sh);
    if (z_scan.bad != kNone) return fail_row(z_scan.bad, w[z_scan.bad]);
  }

  int32_t token = z_scan.index;
  if (p.greedy == 0) {
    // Probabilities into the work row (in place over penalized logits: each thread reads and
    // writes only its own elements).
    for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
      const float x = (z[i] - z_scan.max) * p.inv_temperature;
      w[i] = expf(fmaxf(x, kMinExponent));
    }
    __syncthreads();
    const Cut cut = truncation(w, vocab, p.top_k, p.top_p, sh);
    token = draw(w, vocab, cut, p.min_p, p.uniform, sh);
  }

  float logprob = 0;
  int top = 0;
  if (p.logprob != 0) {
    double sum = 0;
    for (int64_t i = threadIdx.x; i < vocab; i += kThreads)
      sum += double(expf(fmaxf(raw[i] - raw_scan.max, kMinExponent)));
    const double log_z = double(raw_scan.max) + log(block_sum(sum, sh.warp_f64));
    logprob = float(double(raw[token]) - log_z);
    top = int(min(int64_t(min(p.top_logprobs, kMaxTopLogprobs)), vocab));
    if (top > 0) {
      top_tokens(raw, vocab, top, sh);
      if (threadIdx.x == 0)
        for (int j = 0; j < top; ++j) {
          const int32_t t = sh.top_tokens[j];
          out->top_tokens[j] = t;
          out->top_logprobs[j] = float(double(raw[t]) - log_z);
        }
    }
  }
  if (threadIdx.x == 0) {
    out->token = token;
    out->logprob = logprob;
    out->status = kSampled;
    out->bad_token = -1;
    out->bad_value = 0;
    out->top_count = top;
  }
}

__global__ void assemble_kernel(const float* shards, int64_t tp, int64_t rows, int64_t local,
                                float* out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t vocab = tp * local;
  if (i >= rows * vocab) return;
  const int64_t row = i / vocab, col = i % vocab;
  out[i] = shards[((col / local) * rows + row) * local + col % local];
}

__global__ void fill_placeholders_kernel(int32_t* ids, int64_t rows,
                                         const SampleRowOutcome* outcomes, int64_t count) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows || ids[i] >= 0) return;
  const int64_t from = -1 - int64_t(ids[i]);
  const bool sampled = from < count && outcomes[from].status == kSampled;
  ids[i] = sampled ? outcomes[from].token : 0;
}

}  // namespace

void fill_token_placeholders(int32_t* ids, int64_t rows, const SampleRowOutcome* outcomes,
                             int64_t count, cudaStream_t stream) {
  if (rows == 0) return;
  constexpr int kBlock = 256;
  fill_placeholders_kernel<<<blocks_for(rows, kBlock), kBlock, 0, stream>>>(ids, rows, outcomes,
                                                                            count);
  DSMATH_CUDA_CHECK_LAUNCH();
}

void assemble_vocab_shards(const float* shards, int64_t tp, int64_t rows, int64_t local, float* out,
                           cudaStream_t stream) {
  if (rows * tp * local == 0) return;
  constexpr int kBlock = 256;
  assemble_kernel<<<blocks_for(rows * tp * local, kBlock), kBlock, 0, stream>>>(shards, tp, rows,
                                                                                local, out);
  DSMATH_CUDA_CHECK_LAUNCH();
}

void sample_rows(const float* logits, int64_t vocab, const SampleRowParams* params, int64_t n,
                 const PenaltyEntry* penalties, float* work, SampleRowOutcome* outcomes,
                 cudaStream_t stream) {
  DSMATH_CHECK(vocab > 0 && vocab <= kMaxSamplingVocab, "sampling on the GPU: a vocabulary of ",
               vocab, " tokens (at most ", kMaxSamplingVocab, ")");
  if (n == 0) return;
  sample_kernel<<<unsigned(n), kThreads, 0, stream>>>(logits, vocab, params, penalties, work,
                                                      outcomes);
  DSMATH_CUDA_CHECK_LAUNCH();
}

}  // namespace dsmath::cuda
