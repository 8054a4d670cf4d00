// Causal attention over the paged KV cache, for decode and prefill rows alike:
//   slot(j)    = tables[table_offset[r] + j / block_size] * block_size + j % block_size
//   s_j        = (q[r, h] . K[slot(j), g]) / sqrt(d)          j = 0 .. positions[r]
//   out[r, h]  = sum_j e^(s_j - m) V[slot(j), g] / sum_j e^(s_j - m),   m = max_j s_j
// with g = h / (heads / kv_heads) (grouped-query attention). The step's own k, v rows are
// written to their slots first (write_kv), so a prompt's queries see its keys.
//
// One block of kWarps warps per (row, head). Keys are dealt round-robin to the warps; each
// warp keeps an online softmax (running max m, sum l, accumulator acc over d, the lanes
// holding d / 32 elements each) and the warps' states are merged at the end:
//   M = max_w m_w,  out = sum_w acc_w e^(m_w - M) / sum_w l_w e^(m_w - M).
// Every key row is read once per query row: right for decode; a long prompt re-reads its keys
// once per query (from L2), which a tiled flash-style prefill kernel would avoid.
#include <cuda_bf16.h>

#include <cfloat>

#include "common/core/error.h"
#include "kernels/cuda/paged_attention.h"

namespace dsmath::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kMaxPerLane = 8;  // head_dim <= 32 * kMaxPerLane

__device__ inline float load(const float* p) {
  return *p;
}
__device__ inline float load(const __nv_bfloat16* p) {
  return __bfloat162float(*p);
}
__device__ inline void store(float* p, float v) {
  *p = v;
}
__device__ inline void store(__nv_bfloat16* p, float v) {
  *p = __float2bfloat16_rn(v);
}

__device__ inline int64_t slot_of(const StepRows& step, int64_t r, int64_t j, int32_t block_size) {
  const int32_t block = step.tables[step.table_offset[r] + j / block_size];
  return int64_t(block) * block_size + j % block_size;
}

template <typename KV>
__global__ void write_kv_kernel(KV* keys, KV* values, int32_t block_size, StepRows step,
                                const float* k, const float* v, int64_t kv_width) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= step.rows * kv_width) return;
  const int64_t r = i / kv_width, c = i % kv_width;
  const int64_t slot = slot_of(step, r, step.positions[r], block_size);
  store(keys + slot * kv_width + c, k[i]);
  store(values + slot * kv_width + c, v[i]);
}

template <typename KV>
__global__ void attention_kernel(const KV* keys, const KV* values, int32_t block_size,
                                 StepRows step, const float* q, int64_t heads, int64_t kv_heads,
                                 int64_t head_dim, float* out) {
  const int64_t r = blockIdx.x, h = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t g = h / (heads / kv_heads), kv_width = kv_heads * head_dim;
  const float divisor = sqrtf(float(head_dim));  // HF: scores / math.sqrt(d), f32-rounded
  const float* qr = q + (r * heads + h) * head_dim;

  float qv[kMaxPerLane], acc[kMaxPerLane];
  for (int e = 0; e < kMaxPerLane; ++e) {
    const int64_t dim = lane + 32 * e;
    qv[e] = dim < head_dim ? qr[dim] : 0.0f;
    acc[e] = 0.0f;
  }
  float m = -FLT_MAX, l = 0.0f;
  const int64_t kv_len = int64_t(step.positions[r]) + 1;
  for (int64_t j = warp; j < kv_len; j += kWarps) {
    const int64_t base = slot_of(step, r, j, block_size) * kv_width + g * head_dim;
    float dot = 0.0f;
    for (int e = 0; e < kMaxPerLane; ++e) {
      const int64_t dim = lane + 32 * e;
      if (dim < head_dim) dot += qv[e] * load(keys + base + dim);
    }
    for (int offset = 16; offset > 0; offset /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, offset);
    const float s = dot / divisor;
    const float m_new = fmaxf(m, s);
    const float rescale = expf(m - m_new), p = expf(s - m_new);
    l = l * rescale + p;
    for (int e = 0; e < kMaxPerLane; ++e) {
      const int64_t dim = lane + 32 * e;
      const float vv = dim < head_dim ? load(values + base + dim) : 0.0f;
      acc[e] = acc[e] * rescale + p * vv;
    }
    m = m_new;
  }

  // Merge the warps' softmax states.
  __shared__ float warp_m[kWarps], warp_l[kWarps];
  __shared__ float warp_acc[kWarps][32 * kMaxPerLane];
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
  float* o = out + (r * heads + h) * head_dim;
  for (int64_t dim = threadIdx.x; dim < head_dim; dim += blockDim.x) {
    float sum = 0.0f;
    for (int w = 0; w < kWarps; ++w)
      if (warp_l[w] > 0.0f) sum += warp_acc[w][dim] * expf(warp_m[w] - top);
    o[dim] = sum / total;
  }
}

}  // namespace

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

void paged_attention(const PagedKV& cache, const StepRows& step, const float* q, int64_t heads,
                     int64_t kv_heads, int64_t head_dim, float* out, cudaStream_t stream) {
  DSMATH_CHECK(head_dim > 0 && head_dim <= 32 * kMaxPerLane, "paged_attention: head_dim ", head_dim,
               " is outside 1..", 32 * kMaxPerLane);
  DSMATH_CHECK(kv_heads > 0 && heads % kv_heads == 0, "paged_attention: ", heads,
               " heads do not group over ", kv_heads, " kv heads");
  if (step.rows == 0 || heads == 0) return;
  const dim3 grid(unsigned(step.rows), unsigned(heads));
  if (cache.bf16)
    attention_kernel<<<grid, kWarps * 32, 0, stream>>>(
        static_cast<const __nv_bfloat16*>(cache.keys),
        static_cast<const __nv_bfloat16*>(cache.values), cache.block_size, step, q, heads, kv_heads,
        head_dim, out);
  else
    attention_kernel<<<grid, kWarps * 32, 0, stream>>>(
        static_cast<const float*>(cache.keys), static_cast<const float*>(cache.values),
        cache.block_size, step, q, heads, kv_heads, head_dim, out);
  DSMATH_CUDA_CHECK_LAUNCH();
}

}  // namespace dsmath::cuda
