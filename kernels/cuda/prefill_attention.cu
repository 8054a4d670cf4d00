// Flash-style causal attention for a sequence's new tokens (a prompt, or a prompt chunk after
// a prefix already in the paged KV cache). With G = heads / kv_heads, query i of the sequence
// for kv head g is token t = i / G at row first_row + t and position P_t, query head
// h = g G + i % G:
//   slot(j)  = tables[table_offset + j / block_size] * block_size + j % block_size
//   s_ij     = (q[row_t, h] . K[slot(j), g]) / sqrt(d)          j = 0 .. P_t (causal)
//   out[row_t, h] = sum_j e^(s_ij - m_i) V[slot(j), g] / sum_j e^(s_ij - m_i),  m_i = max_j s_ij
// The step's own k, v rows are written to their slots first (write_kv), so the prompt's
// queries see its keys.
//
// One block of kWarps warps per (tile of kPrefillTileQueries consecutive queries, kv head g).
// The tile's queries share g, so the block walks keys 0 .. P_last (its last query's position)
// in tiles of kTileKeys, loading each key and value row from the paged cache into shared memory
// once (as f32) for every query of the tile, the whole GQA group included: a key is read once
// per query tile, not once per query. Each warp owns kQueriesPerWarp queries (q in registers,
// the lanes holding d / 32 elements each) and per key tile updates each query's online softmax
// state (m, l, acc) once, over the tile's keys j <= P_t (the causal mask):
//   m' = max(m, max_j s_ij),  l' = l e^(m - m') + sum_j e^(s_ij - m'),
//   acc' = acc e^(m - m') + sum_j e^(s_ij - m') V[slot(j), g];     out = acc / l at the end.
// Key 0 is in every query's first tile, so m is finite after it.
#include <cuda_bf16.h>

#include <cfloat>

#include "common/core/error.h"
#include "kernels/cuda/prefill_attention.h"

namespace dsmath::cuda {
namespace {

using paged::load;
using paged::slot_of;
using paged::smaller;

constexpr int kQueriesPerWarp = 4;
constexpr int kWarps = int(kPrefillTileQueries) / kQueriesPerWarp;
constexpr int kTileKeys = 16;  // 2 x 16 x 256 f32 of shared memory at head_dim 256
constexpr int kMaxPerLane = paged::kMaxHeadDim / 32;
static_assert(kWarps * kQueriesPerWarp == kPrefillTileQueries);

// Grid (tiles, kv_heads), kWarps * 32 threads.
template <typename KV>
__global__ void __launch_bounds__(kWarps * 32)
    prefill_kernel(const KV* keys, const KV* values, int32_t block_size, StepRows step,
                   const int32_t* tiles, const float* q, int64_t heads, int64_t kv_heads,
                   int64_t head_dim, float* out) {
  __shared__ float k_tile[kTileKeys][paged::kMaxHeadDim];
  __shared__ float v_tile[kTileKeys][paged::kMaxHeadDim];
  const int64_t first_row = tiles[3 * blockIdx.x], tokens = tiles[3 * blockIdx.x + 1],
                first_query = tiles[3 * blockIdx.x + 2];
  const int64_t g = blockIdx.y, group = heads / kv_heads, kv_width = kv_heads * head_dim;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t queries_end = smaller(tokens * group, first_query + kPrefillTileQueries);
  const int32_t table_offset = step.table_offset[first_row];
  // Keys up to the position of the tile's last query (positions rise along the sequence).
  const int64_t kv_end = int64_t(step.positions[first_row + (queries_end - 1) / group]) + 1;
  const float divisor = sqrtf(float(head_dim));  // HF: scores / math.sqrt(d), f32-rounded

  float qv[kQueriesPerWarp][kMaxPerLane], acc[kQueriesPerWarp][kMaxPerLane];
  float m[kQueriesPerWarp], l[kQueriesPerWarp];
  int64_t pos[kQueriesPerWarp];  // the query's position; -1: past the tile's queries
  int64_t warp_last = -1;        // the largest position among the warp's queries
#pragma unroll
  for (int qi = 0; qi < kQueriesPerWarp; ++qi) {
    const int64_t i = first_query + warp * kQueriesPerWarp + qi;
    const float* qr = nullptr;
    pos[qi] = -1;
    m[qi] = -FLT_MAX;
    l[qi] = 0.0f;
    if (i < queries_end) {
      const int64_t r = first_row + i / group, h = g * group + i % group;
      pos[qi] = step.positions[r];
      qr = q + (r * heads + h) * head_dim;
      warp_last = pos[qi] > warp_last ? pos[qi] : warp_last;
    }
#pragma unroll
    for (int e = 0; e < kMaxPerLane; ++e) {
      const int64_t dim = lane + 32 * e;
      qv[qi][e] = qr != nullptr && dim < head_dim ? qr[dim] : 0.0f;
      acc[qi][e] = 0.0f;
    }
  }

  const int d = int(head_dim);
  for (int64_t k0 = 0; k0 < kv_end; k0 += kTileKeys) {
    const int n = int(smaller(kTileKeys, kv_end - k0));  // keys in this tile
    __syncthreads();  // every warp is done with the previous tile
    for (int idx = threadIdx.x; idx < n * d; idx += blockDim.x) {
      const int j = idx / d, dim = idx % d;
      const int64_t base = slot_of(step, table_offset, k0 + j, block_size) * kv_width + g * d;
      k_tile[j][dim] = load(keys + base + dim);
      v_tile[j][dim] = load(values + base + dim);
    }
    __syncthreads();
    if (k0 > warp_last) continue;  // no query of this warp sees these keys (warp-uniform)
#pragma unroll
    for (int qi = 0; qi < kQueriesPerWarp; ++qi) {
      if (pos[qi] < k0) continue;  // warp-uniform, as is `valid`: the shuffles below are safe
      const int valid = int(smaller(n, pos[qi] - k0 + 1));  // keys k0 .. k0 + valid - 1
      float s[kTileKeys];
      float tile_max = -FLT_MAX;
#pragma unroll
      for (int j = 0; j < kTileKeys; ++j) {
        s[j] = -FLT_MAX;
        if (j < valid) {
          float dot = 0.0f;
#pragma unroll
          for (int e = 0; e < kMaxPerLane; ++e) {
            const int dim = lane + 32 * e;
            if (dim < d) dot += qv[qi][e] * k_tile[j][dim];
          }
          for (int offset = 16; offset > 0; offset /= 2)
            dot += __shfl_xor_sync(0xffffffffu, dot, offset);
          s[j] = dot / divisor;
          tile_max = fmaxf(tile_max, s[j]);
        }
      }
      const float m_new = fmaxf(m[qi], tile_max);
      const float rescale = expf(m[qi] - m_new);
      l[qi] *= rescale;
#pragma unroll
      for (int e = 0; e < kMaxPerLane; ++e) acc[qi][e] *= rescale;
#pragma unroll
      for (int j = 0; j < kTileKeys; ++j) {
        if (j < valid) {
          const float p = expf(s[j] - m_new);
          l[qi] += p;
#pragma unroll
          for (int e = 0; e < kMaxPerLane; ++e) {
            const int dim = lane + 32 * e;
            if (dim < d) acc[qi][e] += p * v_tile[j][dim];
          }
        }
      }
      m[qi] = m_new;
    }
  }

#pragma unroll
  for (int qi = 0; qi < kQueriesPerWarp; ++qi) {
    if (pos[qi] < 0) continue;
    const int64_t i = first_query + warp * kQueriesPerWarp + qi;
    const int64_t r = first_row + i / group, h = g * group + i % group;
    float* o = out + (r * heads + h) * head_dim;
#pragma unroll
    for (int e = 0; e < kMaxPerLane; ++e) {
      const int dim = lane + 32 * e;
      if (dim < d) o[dim] = acc[qi][e] / l[qi];
    }
  }
}

template <typename KV>
void launch_prefill(const PagedKV& cache, const StepRows& step, const int32_t* tiles,
                    int64_t tile_count, const float* q, int64_t heads, int64_t kv_heads,
                    int64_t head_dim, float* out, cudaStream_t stream) {
  const dim3 grid{unsigned(tile_count), unsigned(kv_heads)};
  prefill_kernel<<<grid, kWarps * 32, 0, stream>>>(
      static_cast<const KV*>(cache.keys), static_cast<const KV*>(cache.values), cache.block_size,
      step, tiles, q, heads, kv_heads, head_dim, out);
  DSMATH_CUDA_CHECK_LAUNCH();
}

}  // namespace

void prefill_attention(const PagedKV& cache, const StepRows& step, const int32_t* tiles,
                       int64_t tile_count, const float* q, int64_t heads, int64_t kv_heads,
                       int64_t head_dim, float* out, cudaStream_t stream) {
  DSMATH_CHECK(head_dim > 0 && head_dim <= paged::kMaxHeadDim, "prefill_attention: head_dim ",
               head_dim, " is outside 1..", paged::kMaxHeadDim);
  DSMATH_CHECK(kv_heads > 0 && kv_heads <= 65535 && heads % kv_heads == 0,
               "prefill_attention: ", heads, " heads do not group over ", kv_heads, " kv heads");
  DSMATH_CHECK(tile_count >= 0 && tile_count < (int64_t(1) << 31),
               "prefill_attention: ", tile_count, " tiles");
  if (tile_count == 0 || heads == 0) return;
  if (cache.bf16)
    launch_prefill<__nv_bfloat16>(cache, step, tiles, tile_count, q, heads, kv_heads, head_dim, out,
                                  stream);
  else
    launch_prefill<float>(cache, step, tiles, tile_count, q, heads, kv_heads, head_dim, out,
                          stream);
}

}  // namespace dsmath::cuda
