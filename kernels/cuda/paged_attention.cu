// Decode attention over the paged KV cache (one new token per row), split-K for long contexts:
//   slot(j)    = tables[table_offset[r] + j / block_size] * block_size + j % block_size
//   s_j        = (q[r, h] . K[slot(j), g]) / sqrt(d)          j = 0 .. positions[r]
//   out[r, h]  = sum_j e^(s_j - m) V[slot(j), g] / sum_j e^(s_j - m),   m = max_j s_j
// with g = h / (heads / kv_heads) (grouped-query attention). The step's own k, v rows are
// written to their slots first (write_kv), so a row's query sees its own key.
//
// One block of kWarps warps per (row, head, partition). Partition p holds keys
// [p * P, (p + 1) * P) of the row (P = partition_keys; the whole context when not split); the
// keys are dealt round-robin to the warps, each warp keeping an online softmax (running max m,
// sum l, accumulator acc over d, the lanes holding d / 32 elements each), and the warps'
// states are merged at the end:
//   M = max_w m_w,  L = sum_w l_w e^(m_w - M),  A = sum_w acc_w e^(m_w - M).
// Not split: out = A / L. Split: the block stores its partial (M, L, A) in the scratch and
// merge_kernel combines the row's partitions the same way:
//   M* = max_p M_p,  out = sum_p A_p e^(M_p - M*) / sum_p L_p e^(M_p - M*)
// over the partitions p < ceil((positions[r] + 1) / P) that hold keys of the row. A block
// whose partition starts past its row's context (the launch is sized for the step's longest
// row) exits at once and writes nothing; the merge never reads it.
//
// Why split at 512 keys, in partitions of 256 x 2^k: a decode step has rows x heads blocks,
// which at small batches leaves most of the GPU's SMs idle while one block walks a long context
// key by key. 256 keys (64 per warp) keeps a partial's d + 2 floats under 1% of the 2 x 256 x d
// key and value elements the block reads, and a context of at most 512 keys takes one pass
// (no merge launch, no scratch) at no more than 128 keys per warp.
#include <cuda_bf16.h>

#include <algorithm>
#include <cfloat>

#include "common/core/error.h"
#include "kernels/cuda/paged_attention.h"

namespace dsmath::cuda {
namespace {

using paged::load;
using paged::slot_of;
using paged::smaller;

constexpr int kWarps = 4;
constexpr int kMaxPerLane = paged::kMaxHeadDim / 32;   // elements of d per lane
constexpr int64_t kChunkKeys = 256;                    // partitions are 2^k of these
constexpr int64_t kMaxSplitBlocks = int64_t(1) << 15;  // split no further than this many blocks
constexpr int kMergeThreads = paged::kMaxHeadDim;      // one thread per element of d

__device__ inline void store(float* p, float v) {
  *p = v;
}
__device__ inline void store(__nv_bfloat16* p, float v) {
  *p = __float2bfloat16_rn(v);
}

template <typename KV>
__global__ void write_kv_kernel(KV* keys, KV* values, int32_t block_size, StepRows step,
                                const float* k, const float* v, int64_t kv_width) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= step.rows * kv_width) return;
  const int64_t r = i / kv_width, c = i % kv_width;
  const int64_t slot = slot_of(step, step.table_offset[r], step.positions[r], block_size);
  store(keys + slot * kv_width + c, k[i]);
  store(values + slot * kv_width + c, v[i]);
}

// Grid (count, heads, partitions). partition_keys == 0: one pass writing out; otherwise the
// partial of block (x, h, p) goes to ml[2 * i], ml[2 * i + 1] (M, L) and acc[i * d ..] (A),
// i = (x * heads + h) * partitions + p.
template <typename KV>
__global__ void __launch_bounds__(kWarps * 32)
    decode_kernel(const KV* keys, const KV* values, int32_t block_size, StepRows step,
                  const int32_t* decode_rows, const float* q, int64_t heads, int64_t kv_heads,
                  int64_t head_dim, int64_t partition_keys, float* ml, float* partial_acc,
                  float* out) {
  const int64_t x = blockIdx.x, h = blockIdx.y, p = blockIdx.z;
  const int64_t r = decode_rows[x];
  const int64_t kv_len = int64_t(step.positions[r]) + 1;
  const int64_t begin = partition_keys == 0 ? 0 : p * partition_keys;
  if (begin >= kv_len) return;  // the whole block: no barrier is skipped by some threads only
  const int64_t end = partition_keys == 0 ? kv_len : smaller(kv_len, begin + partition_keys);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t g = h / (heads / kv_heads), kv_width = kv_heads * head_dim;
  const int32_t table_offset = step.table_offset[r];
  const float divisor = sqrtf(float(head_dim));  // HF: scores / math.sqrt(d), f32-rounded
  const float* qr = q + (r * heads + h) * head_dim;

  float qv[kMaxPerLane], acc[kMaxPerLane];
  for (int e = 0; e < kMaxPerLane; ++e) {
    const int64_t dim = lane + 32 * e;
    qv[e] = dim < head_dim ? qr[dim] : 0.0f;
    acc[e] = 0.0f;
  }
  float m = -FLT_MAX, l = 0.0f;
  for (int64_t j = begin + warp; j < end; j += kWarps) {
    const int64_t base = slot_of(step, table_offset, j, block_size) * kv_width + g * head_dim;
    float dot = 0.0f;
    for (int e = 0; e < kMaxPerLane; ++e) {
      const int64_t dim = lane + 32 * e;
      if (dim < head_dim) dot += qv[e] * load(keys + base + dim);
    }
    for (int offset = 16; offset > 0; offset /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, offset);
    const float s = dot / divisor;
    const float m_new = fmaxf(m, s);
    const float rescale = expf(m - m_new), pj = expf(s - m_new);
    l = l * rescale + pj;
    for (int e = 0; e < kMaxPerLane; ++e) {
      const int64_t dim = lane + 32 * e;
      const float vv = dim < head_dim ? load(values + base + dim) : 0.0f;
      acc[e] = acc[e] * rescale + pj * vv;
    }
    m = m_new;
  }

  // Merge the warps' softmax states (a warp that got no key has l = 0 and is left out).
  __shared__ float warp_m[kWarps], warp_l[kWarps];
  __shared__ float warp_acc[kWarps][paged::kMaxHeadDim];
  if (lane == 0) {
    warp_m[warp] = m;
    warp_l[warp] = l;
  }
  for (int e = 0; e < kMaxPerLane; ++e) warp_acc[warp][lane + 32 * e] = acc[e];
  __syncthreads();
  float top = -FLT_MAX;
  for (int w = 0; w < kWarps; ++w)
    if (warp_l[w] > 0.0f) top = fmaxf(top, warp_m[w]);
  float total = 0.0f;
  for (int w = 0; w < kWarps; ++w)
    if (warp_l[w] > 0.0f) total += warp_l[w] * expf(warp_m[w] - top);
  const int64_t i = (x * heads + h) * gridDim.z + p;
  float* o = partition_keys == 0 ? out + (r * heads + h) * head_dim : partial_acc + i * head_dim;
  for (int64_t dim = threadIdx.x; dim < head_dim; dim += blockDim.x) {
    float sum = 0.0f;
    for (int w = 0; w < kWarps; ++w)
      if (warp_l[w] > 0.0f) sum += warp_acc[w][dim] * expf(warp_m[w] - top);
    o[dim] = partition_keys == 0 ? sum / total : sum;
  }
  if (partition_keys != 0 && threadIdx.x == 0) {
    ml[2 * i] = top;
    ml[2 * i + 1] = total;
  }
}

// Grid (count, heads), kMergeThreads threads: thread t produces element t of out[r, h].
__global__ void __launch_bounds__(kMergeThreads)
    merge_kernel(StepRows step, const int32_t* decode_rows, int64_t heads, int64_t head_dim,
                 int64_t partitions, int64_t partition_keys, const float* ml,
                 const float* partial_acc, float* out) {
  const int64_t x = blockIdx.x, h = blockIdx.y;
  const int64_t r = decode_rows[x];
  const int64_t kv_len = int64_t(step.positions[r]) + 1;
  // The partitions the decode kernel wrote for this row: every one that starts inside it.
  const int64_t used = smaller(partitions, (kv_len + partition_keys - 1) / partition_keys);
  const int64_t first = (x * heads + h) * partitions;
  float top = -FLT_MAX;
  for (int64_t p = 0; p < used; ++p) top = fmaxf(top, ml[2 * (first + p)]);
  float total = 0.0f;
  for (int64_t p = 0; p < used; ++p)
    total += ml[2 * (first + p) + 1] * expf(ml[2 * (first + p)] - top);

  __shared__ float weight[kMergeThreads];  // e^(M_p - M*) of a chunk of partitions
  const int t = threadIdx.x;
  float sum = 0.0f;
  for (int64_t c = 0; c < used; c += kMergeThreads) {
    __syncthreads();  // the previous chunk's weights are read
    if (c + t < used) weight[t] = expf(ml[2 * (first + c + t)] - top);
    __syncthreads();
    const int64_t n = smaller(kMergeThreads, used - c);
    if (t < head_dim)
      for (int64_t k = 0; k < n; ++k)
        sum += weight[k] * partial_acc[(first + c + k) * head_dim + t];
  }
  if (t < head_dim) out[(r * heads + h) * head_dim + t] = sum / total;
}

template <typename KV>
void launch_decode(const PagedKV& cache, const StepRows& step, const int32_t* decode_rows,
                   int64_t count, DecodeSplit split, const float* q, int64_t heads,
                   int64_t kv_heads, int64_t head_dim, float* scratch, float* out,
                   cudaStream_t stream) {
  const bool splits = split.partitions > 1;
  float* ml = splits ? scratch : nullptr;
  float* acc = splits ? scratch + 2 * count * heads * split.partitions : nullptr;
  const dim3 grid{unsigned(count), unsigned(heads), unsigned(split.partitions)};
  decode_kernel<<<grid, kWarps * 32, 0, stream>>>(
      static_cast<const KV*>(cache.keys), static_cast<const KV*>(cache.values), cache.block_size,
      step, decode_rows, q, heads, kv_heads, head_dim, splits ? split.partition_keys : 0, ml, acc,
      out);
  DSMATH_CUDA_CHECK_LAUNCH();
  if (!splits) return;
  merge_kernel<<<dim3(unsigned(count), unsigned(heads)), kMergeThreads, 0, stream>>>(
      step, decode_rows, heads, head_dim, split.partitions, split.partition_keys, ml, acc, out);
  DSMATH_CUDA_CHECK_LAUNCH();
}

}  // namespace

DecodeSplit decode_split(int64_t rows, int64_t heads, int64_t max_kv_len) {
  if (max_kv_len <= kSplitAbove || rows * heads <= 0) return {};
  int64_t chunks = 1;  // a power of two covering the context in chunks of kChunkKeys
  while (chunks * kChunkKeys < max_kv_len) chunks *= 2;
  int64_t partitions = chunks;
  while (partitions > 1 && rows * heads * partitions > kMaxSplitBlocks) partitions /= 2;
  if (partitions == 1) return {};
  return {int32_t(partitions), chunks / partitions * kChunkKeys};
}

int64_t decode_scratch_floats(int64_t rows, int64_t heads, int64_t head_dim, DecodeSplit split) {
  if (split.partitions <= 1) return 0;
  return rows * heads * split.partitions * (head_dim + 2);
}

void write_kv(const PagedKV& cache, const StepRows& step, const float* k, const float* v,
              int64_t kv_width, cudaStream_t stream) {
  const int64_t n = step.rows * kv_width;
  if (n == 0) return;
  constexpr int threads = 256;
  if (cache.bf16)
    write_kv_kernel<<<blocks_for(n, threads), threads, 0, stream>>>(
        static_cast<__nv_bfloat16*>(cache.keys), static_cast<__nv_bfloat16*>(cache.values),
        cache.block_size, step, k, v, kv_width);
  else
    write_kv_kernel<<<blocks_for(n, threads), threads, 0, stream>>>(
        static_cast<float*>(cache.keys), static_cast<float*>(cache.values), cache.block_size, step,
        k, v, kv_width);
  DSMATH_CUDA_CHECK_LAUNCH();
}

void decode_attention(const PagedKV& cache, const StepRows& step, const int32_t* decode_rows,
                      int64_t count, DecodeSplit split, const float* q, int64_t heads,
                      int64_t kv_heads, int64_t head_dim, float* scratch, float* out,
                      cudaStream_t stream) {
  DSMATH_CHECK(head_dim > 0 && head_dim <= paged::kMaxHeadDim, "decode_attention: head_dim ",
               head_dim, " is outside 1..", paged::kMaxHeadDim);
  DSMATH_CHECK(kv_heads > 0 && heads % kv_heads == 0, "decode_attention: ", heads,
               " heads do not group over ", kv_heads, " kv heads");
  DSMATH_CHECK(split.partitions >= 1 && split.partitions <= 65535 &&
                   (split.partitions == 1 || (split.partition_keys > 0 && scratch != nullptr)),
               "decode_attention: ", split.partitions, " partitions of ", split.partition_keys,
               " keys");
  DSMATH_CHECK(heads <= 65535, "decode_attention: ", heads, " heads");
  if (count == 0 || heads == 0) return;
  if (cache.bf16)
    launch_decode<__nv_bfloat16>(cache, step, decode_rows, count, split, q, heads, kv_heads,
                                 head_dim, scratch, out, stream);
  else
    launch_decode<float>(cache, step, decode_rows, count, split, q, heads, kv_heads, head_dim,
                         scratch, out, stream);
}

}  // namespace dsmath::cuda
