// Every op of the CUDA backend against the CPU backend, through the Backend interface, on
// random non-zero inputs at several shapes. Outputs on the GPU are poisoned (NaN) before each
// op, so an element the kernel never writes shows up. GEMM inputs are rounded to bf16 before
// the CPU runs them (the GPU's tensor cores read bf16 activations), so what is compared is the
// kernel, not the rounding: only the order of f32 sums differs. Without a CUDA device every
// test reports SKIPPED (ctest counts it as skipped, not passed).
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <utility>
#include <vector>

#include "common/checkpoint/model_config.h"
#include "kernels/cuda/paged_attention.h"
#include "tests/support/random_floats.h"
#include "worker/model/cpu_backend.h"
#include "worker/model/cuda_backend.h"

namespace dsmath {
namespace {

using testing::random_floats;

bool have_gpu() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

#define REQUIRE_GPU() \
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device on this machine"

std::vector<float> bf16_rounded(std::vector<float> v) {
  for (float& f : v) f = bf16_to_f32(f32_to_bf16(f));
  return v;
}

std::vector<uint16_t> to_bf16_words(const std::vector<float>& v) {
  std::vector<uint16_t> w(v.size());
  for (size_t i = 0; i < v.size(); ++i) w[i] = f32_to_bf16(v[i]);
  return w;
}

std::vector<float> host_of(Backend& b, const Tensor& t) {
  std::vector<float> out(size_t(t.size()));
  b.to_host(t, out.data());
  return out;
}

// Sizes t on the GPU and fills it with NaN, so the op that writes it next reuses this storage.
void poison(CudaBackend& gpu, Tensor& t, int64_t rows, int64_t cols) {
  gpu.resize(t, rows, cols);
  // On the backend's stream: a legacy-stream memset would not be ordered with its kernels.
  ASSERT_EQ(cudaMemsetAsync(t.data(), 0xFF, size_t(t.size()) * sizeof(float), gpu.stream()),
            cudaSuccess);
}

// |a - b| <= abs_tol + rel_tol * |b| everywhere, and no NaN.
void expect_close(const std::vector<float>& gpu, const std::vector<float>& cpu, float abs_tol,
                  float rel_tol, const std::string& what) {
  ASSERT_EQ(gpu.size(), cpu.size()) << what;
  size_t bad = 0;
  for (size_t i = 0; i < gpu.size(); ++i) {
    const bool ok = std::isfinite(gpu[i]) &&
                    std::fabs(gpu[i] - cpu[i]) <= abs_tol + rel_tol * std::fabs(cpu[i]);
    if (!ok && ++bad <= 5)
      ADD_FAILURE() << what << ": element " << i << ": gpu " << gpu[i] << " cpu " << cpu[i];
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << gpu.size() << " elements differ";
}

// Both backends, set up for the same heads, blocks and step.
struct Pair {
  CpuBackend cpu;
  CudaBackend gpu{0, DType::F32};
  Pair() = default;
  explicit Pair(DType kv) : cpu(kv), gpu(0, kv) {}
  void prepare(const ModelConfig& c, int64_t heads, int64_t kv_heads, int32_t blocks, int32_t bs) {
    cpu.prepare(c, heads, kv_heads, blocks, bs);
    gpu.prepare(c, heads, kv_heads, blocks, bs);
  }
  void begin_step(const StepInputs& step) {
    cpu.begin_step(step);
    gpu.begin_step(step);
  }
};

ModelConfig config_of(int64_t head_dim, int64_t layers = 2) {
  ModelConfig c;
  c.head_dim = head_dim;
  c.num_hidden_layers = layers;
  c.rope_theta = 10000.0;
  c.rope_scaling_factor = 1.0;
  return c;
}

// A step of `rows` tokens as one sequence at positions first .. first + rows - 1.
struct OneSequence {
  std::vector<int32_t> ids, positions, table;
  std::vector<AttentionSequence> seqs;
  std::vector<int64_t> logit_rows;
  OneSequence(int64_t rows, int32_t first, int32_t block_size, int32_t vocab = 1000) {
    for (int64_t i = 0; i < rows; ++i) {
      ids.push_back(int32_t((17 + 31 * i) % vocab));
      positions.push_back(first + int32_t(i));
      logit_rows.push_back(rows - 1 - i);  // reversed: the gather's order matters
    }
    for (int32_t b = 0; b * block_size < first + rows; ++b) table.push_back(b);
    seqs.push_back({0, rows, first, table});
  }
  StepInputs inputs() const { return {ids, positions, seqs, logit_rows}; }
};

TEST(CudaOps, EmbeddingGathersThisRanksRowsAndZerosTheRest) {
  REQUIRE_GPU();
  for (const int64_t cols : {16, 96, 4096}) {
    Pair p;
    p.prepare(config_of(16), 1, 1, 4, 16);
    const std::vector<uint16_t> table = to_bf16_words(random_floats(size_t(300 * cols), 1));
    const WeightView host{table.data(), DType::BF16, 300, cols};
    OneSequence step(40, 0, 16, /*vocab=*/1000);  // ids up to 999: most are another rank's
    p.begin_step(step.inputs());
    Tensor c, g;
    p.cpu.embedding(p.cpu.place_table(host), 200, c);
    poison(p.gpu, g, 40, cols);
    p.gpu.embedding(p.gpu.place_table(host), 200, g);
    expect_close(host_of(p.gpu, g), host_of(p.cpu, c), 0, 0,
                 "embedding cols " + std::to_string(cols));
  }
}

TEST(CudaOps, RmsNormMatchesTheCpu) {
  REQUIRE_GPU();
  for (const auto& [rows, dim] :
       std::vector<std::pair<int64_t, int64_t>>{{1, 64}, {7, 4096}, {33, 300}}) {
    Pair p;
    const std::vector<float> x = random_floats(size_t(rows * dim), 2, 3.0f);
    const std::vector<uint16_t> gamma = to_bf16_words(random_floats(size_t(dim), 3));
    Tensor xc, xg, c, g;
    p.cpu.upload(x.data(), rows, dim, xc);
    p.gpu.upload(x.data(), rows, dim, xg);
    p.cpu.rms_norm(xc, p.cpu.place(NormWeight{gamma.data(), DType::BF16}, dim), 1e-6f, c);
    poison(p.gpu, g, rows, dim);
    p.gpu.rms_norm(xg, p.gpu.place(NormWeight{gamma.data(), DType::BF16}, dim), 1e-6f, g);
    expect_close(host_of(p.gpu, g), host_of(p.cpu, c), 1e-6f, 1e-5f, "rms_norm");
  }
}

TEST(CudaOps, LinearAndLinearChunkedMatchTheCpuOnBf16Inputs) {
  REQUIRE_GPU();
  struct Shape {
    int64_t m, n, k;
  };
  for (const Shape s :
       {Shape{1, 64, 96}, Shape{7, 256, 512}, Shape{64, 1000, 384}, Shape{200, 128, 4096}}) {
    Pair p;
    const std::vector<float> x = bf16_rounded(random_floats(size_t(s.m * s.k), 4));
    const std::vector<uint16_t> w = to_bf16_words(random_floats(size_t(s.n * s.k), 5));
    const WeightView host{w.data(), DType::BF16, s.n, s.k};
    Tensor xc, xg, c, g;
    p.cpu.upload(x.data(), s.m, s.k, xc);
    p.gpu.upload(x.data(), s.m, s.k, xg);
    const std::string shape =
        std::to_string(s.m) + "x" + std::to_string(s.n) + "x" + std::to_string(s.k);
    // Sums of k products of magnitude <= 1: f32 order differences grow like sqrt(k) ulps
    // (tensor cores may also truncate partial sums, hence the margin).
    const float tol = 3e-5f * std::sqrt(float(s.k));
    p.cpu.linear(xc, p.cpu.place(host), c);
    poison(p.gpu, g, s.m, s.n);
    p.gpu.linear(xg, p.gpu.place(host), g);
    expect_close(host_of(p.gpu, g), host_of(p.cpu, c), tol, 1e-5f, "linear " + shape);

    for (const int64_t chunks : {2, 8}) {
      Tensor cc, gc;
      p.cpu.linear_chunked(xc, p.cpu.place(host), chunks, cc);
      poison(p.gpu, gc, s.m, s.n);
      p.gpu.linear_chunked(xg, p.gpu.place(host), chunks, gc);
      expect_close(host_of(p.gpu, gc), host_of(p.cpu, cc), tol, 1e-5f,
                   "linear_chunked " + std::to_string(chunks) + " " + shape);
    }
  }
}

TEST(CudaOps, TreeSumAddsInTheSameOrderBitForBit) {
  REQUIRE_GPU();
  for (const int64_t parts : {1, 2, 3, 4, 8}) {
    Pair p;
    const std::vector<float> x = random_floats(size_t(parts * 5 * 77), 6, 1e3f);
    Tensor xc, xg, c, g;
    p.cpu.upload(x.data(), parts * 5, 77, xc);
    p.gpu.upload(x.data(), parts * 5, 77, xg);
    p.cpu.tree_sum(xc, parts, c);
    poison(p.gpu, g, 5, 77);
    p.gpu.tree_sum(xg, parts, g);
    expect_close(host_of(p.gpu, g), host_of(p.cpu, c), 0, 0, "tree_sum " + std::to_string(parts));
  }
}

TEST(CudaOps, RopeSiluMulAndAddMatchTheCpu) {
  REQUIRE_GPU();
  for (const int64_t head_dim : {16, 64, 128}) {
    Pair p;
    p.prepare(config_of(head_dim), 4, 2, 64, 16);
    OneSequence step(23, 900, 16);  // large positions: the angles are big
    p.begin_step(step.inputs());
    const std::vector<float> x = random_floats(size_t(23 * 4 * head_dim), 7);
    Tensor c, g;
    p.cpu.upload(x.data(), 23, 4 * head_dim, c);
    p.gpu.upload(x.data(), 23, 4 * head_dim, g);
    p.cpu.rope(c, 4);
    p.gpu.rope(g, 4);
    expect_close(host_of(p.gpu, g), host_of(p.cpu, c), 2e-6f, 1e-5f,
                 "rope head_dim " + std::to_string(head_dim));
  }
  Pair p;
  const std::vector<float> gate = random_floats(5000, 8, 8.0f), up = random_floats(5000, 9);
  Tensor gc, uc, gg, ug, c, g;
  p.cpu.upload(gate.data(), 50, 100, gc);
  p.cpu.upload(up.data(), 50, 100, uc);
  p.gpu.upload(gate.data(), 50, 100, gg);
  p.gpu.upload(up.data(), 50, 100, ug);
  p.cpu.silu_mul(gc, uc, c);
  poison(p.gpu, g, 50, 100);
  p.gpu.silu_mul(gg, ug, g);
  expect_close(host_of(p.gpu, g), host_of(p.cpu, c), 1e-7f, 1e-6f, "silu_mul");
  p.cpu.add(gc, uc);
  p.gpu.add(gg, ug);
  expect_close(host_of(p.gpu, gg), host_of(p.cpu, gc), 0, 0, "add");
}

// The stacked projections (one GEMM, then one splitting kernel) against the CPU's parts one by
// one: q/k/v with rope at large positions, over grouped and ungrouped heads, and gate/up/silu.
TEST(CudaOps, StackedQkvRopeAndGateUpSiluMatchTheCpu) {
  REQUIRE_GPU();
  const int64_t k = 384, rows = 23;
  const std::vector<float> x = bf16_rounded(random_floats(size_t(rows * k), 10));
  const float tol = 2 * 3e-5f * std::sqrt(float(k));  // a rotation adds two GEMM outputs
  for (const int64_t head_dim : {64, 128}) {
    for (const int64_t kv_heads : {4, 1}) {
      const int64_t heads = 4;
      Pair p;
      p.prepare(config_of(head_dim), heads, kv_heads, 64, 16);
      OneSequence step(rows, 900, 16);
      p.begin_step(step.inputs());
      const std::vector<uint16_t> wq =
          to_bf16_words(random_floats(size_t(heads * head_dim * k), 11));
      const std::vector<uint16_t> wk =
          to_bf16_words(random_floats(size_t(kv_heads * head_dim * k), 12));
      const std::vector<uint16_t> wv =
          to_bf16_words(random_floats(size_t(kv_heads * head_dim * k), 13));
      const std::vector<WeightView> parts{{wq.data(), DType::BF16, heads * head_dim, k},
                                          {wk.data(), DType::BF16, kv_heads * head_dim, k},
                                          {wv.data(), DType::BF16, kv_heads * head_dim, k}};
      Tensor xc, xg, sc, sg, qc, kc, vc, qg, kg, vg;
      p.cpu.upload(x.data(), rows, k, xc);
      p.gpu.upload(x.data(), rows, k, xg);
      p.cpu.qkv_rope(xc, p.cpu.place_stacked(parts), sc, qc, kc, vc);
      poison(p.gpu, qg, rows, heads * head_dim);
      poison(p.gpu, kg, rows, kv_heads * head_dim);
      poison(p.gpu, vg, rows, kv_heads * head_dim);
      p.gpu.qkv_rope(xg, p.gpu.place_stacked(parts), sg, qg, kg, vg);
      const std::string shape =
          " head_dim " + std::to_string(head_dim) + " kv_heads " + std::to_string(kv_heads);
      expect_close(host_of(p.gpu, qg), host_of(p.cpu, qc), tol, 1e-5f, "q" + shape);
      expect_close(host_of(p.gpu, kg), host_of(p.cpu, kc), tol, 1e-5f, "k" + shape);
      expect_close(host_of(p.gpu, vg), host_of(p.cpu, vc), tol, 1e-5f, "v" + shape);
    }
  }
  for (const int64_t width : {300, 1024}) {
    Pair p;
    const std::vector<uint16_t> wg = to_bf16_words(random_floats(size_t(width * k), 14));
    const std::vector<uint16_t> wu = to_bf16_words(random_floats(size_t(width * k), 15));
    const std::vector<WeightView> parts{{wg.data(), DType::BF16, width, k},
                                        {wu.data(), DType::BF16, width, k}};
    Tensor xc, xg, sc, sg, c, g;
    p.cpu.upload(x.data(), rows, k, xc);
    p.gpu.upload(x.data(), rows, k, xg);
    p.cpu.gate_up_silu(xc, p.cpu.place_stacked(parts), sc, c);
    poison(p.gpu, g, rows, width);
    p.gpu.gate_up_silu(xg, p.gpu.place_stacked(parts), sg, g);
    // silu(g) * u: both factors carry a GEMM's error, of sums of magnitude up to ~sqrt(k).
    expect_close(host_of(p.gpu, g), host_of(p.cpu, c), tol * std::sqrt(float(k)), 1e-4f,
                 "gate_up_silu width " + std::to_string(width));
  }
}

// q, k, v of a step on both backends, the GPU output poisoned before attention runs.
struct AttentionTensors {
  Tensor qc, kc, vc, qg, kg, vg, c, g;
  void upload(Pair& p, const std::vector<float>& q, const std::vector<float>& k,
              const std::vector<float>& v, int64_t rows, int64_t q_width, int64_t kv_width) {
    p.cpu.upload(q.data(), rows, q_width, qc);
    p.cpu.upload(k.data(), rows, kv_width, kc);
    p.cpu.upload(v.data(), rows, kv_width, vc);
    p.gpu.upload(q.data(), rows, q_width, qg);
    p.gpu.upload(k.data(), rows, kv_width, kg);
    p.gpu.upload(v.data(), rows, kv_width, vg);
    poison(p.gpu, g, rows, q_width);
  }
  // Runs attention on both (the GPU's inside `run`, e.g. a graph step) and compares.
  void compare(
      Pair& p, int64_t layer, const std::string& what,
      const std::function<void(const std::function<void()>&)>& run =
          [](const std::function<void()>& body) { body(); }) {
    p.cpu.attention(layer, qc, kc, vc, c);
    run([&] { p.gpu.attention(layer, qg, kg, vg, g); });
    expect_close(host_of(p.gpu, g), host_of(p.cpu, c), 1e-5f, 1e-4f, what);
  }
};

// Attention shapes for the split-K decode and the tiled prefill kernels: one sequence's new
// tokens at positions first .. first + tokens - 1.
struct SeqShape {
  int64_t tokens;
  int32_t first;
};

// One block table per context (positions), the blocks handed out from `top` down (out of
// order, and away from block 0).
std::vector<std::vector<int32_t>> tables_for(const std::vector<int64_t>& contexts,
                                             int32_t block_size, int32_t top) {
  std::vector<std::vector<int32_t>> tables;
  for (const int64_t context : contexts) {
    std::vector<int32_t> table;
    for (int64_t b = 0; b * block_size < context; ++b) table.push_back(top--);
    tables.push_back(table);
  }
  EXPECT_GE(top, -1) << "too few KV blocks for the test's contexts";
  return tables;
}

// A step of sequences `shapes`, sequence i in tables[i] (the step's spans point into them).
struct ShapedStep {
  std::vector<std::vector<int32_t>> tables;
  std::vector<int32_t> ids, positions;
  std::vector<AttentionSequence> seqs;
  std::vector<int64_t> logit_rows;
  ShapedStep(const std::vector<SeqShape>& shapes, std::vector<std::vector<int32_t>> given)
      : tables(std::move(given)) {
    for (size_t i = 0; i < shapes.size(); ++i) {
      seqs.push_back({int64_t(ids.size()), shapes[i].tokens, shapes[i].first, tables[i]});
      for (int64_t t = 0; t < shapes[i].tokens; ++t) {
        ids.push_back(1);
        positions.push_back(shapes[i].first + int32_t(t));
      }
      logit_rows.push_back(int64_t(ids.size()) - 1);
    }
  }
  ShapedStep(const ShapedStep&) = delete;
  StepInputs inputs() const { return {ids, positions, seqs, logit_rows}; }
};

std::vector<int64_t> contexts_of(const std::vector<SeqShape>& shapes) {
  std::vector<int64_t> contexts;
  for (const SeqShape& s : shapes) contexts.push_back(s.first + s.tokens);
  return contexts;
}

// A mixed step as the engine makes them: a prompt chunk after a cached prefix, a whole prompt,
// and single decode tokens, over blocks given out of order (from 63 down); grouped-query heads.
const std::vector<SeqShape> kMixedStep{{37, 20}, {9, 0}, {1, 300}, {1, 0}, {1, 16}};

TEST(CudaOps, PagedAttentionMatchesTheCpuForPrefillAndDecodeRows) {
  REQUIRE_GPU();
  for (const DType kv : {DType::F32, DType::BF16}) {
    for (const int64_t head_dim : {16, 64, 80, 128, 256}) {
      const int64_t heads = 8, kv_heads = 2;
      const int32_t bs = 16;
      Pair p(kv);
      p.prepare(config_of(head_dim, 2), heads, kv_heads, 64, bs);
      const ShapedStep step(kMixedStep, tables_for(contexts_of(kMixedStep), bs, 63));
      const int64_t rows = int64_t(step.ids.size());
      // Fill every earlier position of each sequence first (one step per sequence prefix),
      // then run the mixed step on top of that cache.
      for (size_t i = 0; i < step.seqs.size(); ++i) {
        const AttentionSequence& s = step.seqs[i];
        if (s.first_position == 0) continue;
        std::vector<int32_t> ids(size_t(s.first_position), 1), pos(size_t(s.first_position));
        std::iota(pos.begin(), pos.end(), 0);
        const std::vector<AttentionSequence> prefix{{0, s.first_position, 0, s.block_table}};
        const std::vector<int64_t> none;
        p.begin_step({ids, pos, prefix, none});
        const std::vector<float> q = random_floats(size_t(s.first_position * heads * head_dim), 10);
        const std::vector<float> k =
            random_floats(size_t(s.first_position * kv_heads * head_dim), 11 + uint32_t(i));
        const std::vector<float> v =
            random_floats(size_t(s.first_position * kv_heads * head_dim), 21 + uint32_t(i));
        for (Backend* b : {static_cast<Backend*>(&p.cpu), static_cast<Backend*>(&p.gpu)}) {
          for (int64_t layer : {0, 1}) {
            Tensor tq, tk, tv, out;
            b->upload(q.data(), s.first_position, heads * head_dim, tq);
            b->upload(k.data(), s.first_position, kv_heads * head_dim, tk);
            b->upload(v.data(), s.first_position, kv_heads * head_dim, tv);
            b->attention(layer, tq, tk, tv, out);
          }
        }
      }
      p.begin_step(step.inputs());
      const std::vector<float> q = random_floats(size_t(rows * heads * head_dim), 30, 2.0f);
      const std::vector<float> k = random_floats(size_t(rows * kv_heads * head_dim), 31, 2.0f);
      const std::vector<float> v = random_floats(size_t(rows * kv_heads * head_dim), 32);
      AttentionTensors t;
      t.upload(p, q, k, v, rows, heads * head_dim, kv_heads * head_dim);
      const std::string what = std::string("attention kv ") + std::string(dtype_name(kv)) +
                               " head_dim " + std::to_string(head_dim);
      t.compare(p, 1, what);

      // Copy-on-write: block 63 (the first sequence's first block) copied over block 0, then
      // a decode row reading block 0 in its place must see the same keys.
      p.cpu.copy_kv_block(63, 0);
      p.gpu.copy_kv_block(63, 0);
      std::vector<int32_t> table = step.tables[0];
      table[0] = 0;
      const std::vector<AttentionSequence> one{{0, 1, 10, table}};
      const std::vector<int32_t> id{1}, pos{10};
      const std::vector<int64_t> last{0};
      p.begin_step({id, pos, one, last});
      AttentionTensors one_row;
      one_row.upload(p, q, k, v, 1, heads * head_dim, kv_heads * head_dim);
      one_row.compare(p, 0, what + " after copy");
    }
  }
}

// One attention step on both backends over `shapes` (sequence i in tables[i]): random
// non-zero q, k, v for the new tokens, the GPU output poisoned, the outputs compared.
void attention_step(Pair& p, const std::vector<SeqShape>& shapes,
                    const std::vector<std::vector<int32_t>>& tables, int64_t heads,
                    int64_t kv_heads, int64_t head_dim, int64_t layer, uint32_t seed,
                    const std::string& what) {
  const ShapedStep step(shapes, tables);
  p.begin_step(step.inputs());
  const int64_t rows = int64_t(step.ids.size());
  const std::vector<float> q = random_floats(size_t(rows * heads * head_dim), seed, 2.0f);
  const std::vector<float> k = random_floats(size_t(rows * kv_heads * head_dim), seed + 1, 2.0f);
  const std::vector<float> v = random_floats(size_t(rows * kv_heads * head_dim), seed + 2);
  AttentionTensors t;
  t.upload(p, q, k, v, rows, heads * head_dim, kv_heads * head_dim);
  t.compare(p, layer, what);
}

// Fills positions 0 .. prefix[i] - 1 of every sequence in prompt chunks of at most `chunk`
// tokens, several sequences per step, comparing each step (chunked prefill after a prefix).
void fill_prefixes(Pair& p, const std::vector<int64_t>& prefix,
                   const std::vector<std::vector<int32_t>>& tables, int64_t heads, int64_t kv_heads,
                   int64_t head_dim, int64_t layer, int64_t chunk, const std::string& what) {
  for (int64_t done = 0;; done += chunk) {
    std::vector<SeqShape> shapes;
    std::vector<std::vector<int32_t>> step_tables;
    for (size_t i = 0; i < prefix.size(); ++i) {
      if (prefix[i] <= done) continue;
      shapes.push_back({std::min(chunk, prefix[i] - done), int32_t(done)});
      step_tables.push_back(tables[i]);
    }
    if (shapes.empty()) return;
    attention_step(p, shapes, step_tables, heads, kv_heads, head_dim, layer, 100 + uint32_t(done),
                   what + " prefix chunk at " + std::to_string(done));
  }
}

struct HeadShape {
  int64_t head_dim, heads, kv_heads;
};

std::string shape_name(DType kv, const HeadShape& s) {
  return std::string("kv ") + std::string(dtype_name(kv)) + " head_dim " +
         std::to_string(s.head_dim) + " heads " + std::to_string(s.heads) + "/" +
         std::to_string(s.kv_heads);
}

// Host only (no device needed): the split is a power-of-two bucket of the longest context,
// one pass up to kSplitAbove keys, and never more blocks than the cap.
TEST(CudaOps, DecodeSplitIsAPowerOfTwoBucketOfTheLongestContext) {
  EXPECT_EQ(cuda::decode_split(4, 8, 37).partitions, 1);
  EXPECT_EQ(cuda::decode_split(4, 8, cuda::kSplitAbove).partitions, 1);
  const cuda::DecodeSplit s600 = cuda::decode_split(4, 8, 600);
  EXPECT_EQ(s600.partitions, 4);
  EXPECT_EQ(s600.partition_keys, 256);
  const cuda::DecodeSplit s2100 = cuda::decode_split(4, 8, 2100);
  EXPECT_EQ(s2100.partitions, 16);
  EXPECT_EQ(s2100.partition_keys, 256);
  // Every context of a bucket gets the same split (one graph per bucket).
  const cuda::DecodeSplit s4096 = cuda::decode_split(4, 8, 4096);
  EXPECT_EQ(cuda::decode_split(4, 8, 2049).partitions, s4096.partitions);
  EXPECT_EQ(cuda::decode_split(4, 8, 2049).partition_keys, s4096.partition_keys);
  // Many rows: fewer, longer partitions, still covering the context.
  const cuda::DecodeSplit many = cuda::decode_split(512, 32, 100000);
  EXPECT_GT(many.partitions, 1);
  EXPECT_LE(512 * 32 * int64_t(many.partitions), int64_t(1) << 15);
  EXPECT_GE(many.partitions * many.partition_keys, 100000);
  EXPECT_EQ(cuda::decode_split(4096, 32, 100000).partitions, 1);
  EXPECT_EQ(cuda::decode_scratch_floats(4, 8, 128, cuda::decode_split(4, 8, 37)), 0);
  EXPECT_EQ(cuda::decode_scratch_floats(4, 8, 128, s600), 4 * 8 * 4 * 130);
}

// Decode rows whose contexts lie below and well above the split threshold (37, 600, 2100
// keys), in one step; their prefixes filled by chunked prefill steps, each compared too.
TEST(CudaOps, SplitDecodeAttentionMatchesTheCpuAtLongContexts) {
  REQUIRE_GPU();
  const int32_t bs = 16, blocks = 200;
  const std::vector<int64_t> contexts{37, 600, 2100};
  for (const DType kv : {DType::F32, DType::BF16}) {
    for (const HeadShape& s :
         std::vector<HeadShape>{{64, 2, 2}, {80, 4, 1}, {128, 4, 1}, {256, 2, 2}}) {
      Pair p(kv);
      p.prepare(config_of(s.head_dim, 2), s.heads, s.kv_heads, blocks, bs);
      const auto tables = tables_for(contexts, bs, blocks - 1);
      std::vector<int64_t> prefix;
      std::vector<SeqShape> decode;
      for (const int64_t c : contexts) {
        prefix.push_back(c - 1);
        decode.push_back({1, int32_t(c - 1)});
      }
      const std::string what = shape_name(kv, s);
      fill_prefixes(p, prefix, tables, s.heads, s.kv_heads, s.head_dim, 1, 700, what);
      attention_step(p, decode, tables, s.heads, s.kv_heads, s.head_dim, 1, 7,
                     what + " decode 37/600/2100");
    }
  }
}

// Prompts of 1, 17 and 100 tokens, alone and after a cached prefix, with decode rows in the
// same step; grouped heads (1, 3, 4 query heads per kv head: tiles of 32 queries then end
// inside a row's group).
TEST(CudaOps, PrefillAttentionMatchesTheCpuWithAndWithoutACachedPrefix) {
  REQUIRE_GPU();
  const int32_t bs = 16, blocks = 128;
  const std::vector<SeqShape> step{{17, 0},    {100, 0}, {1, 0},  {17, 45},
                                   {100, 300}, {1, 130}, {1, 700}};
  const std::vector<int64_t> contexts = contexts_of(step);
  std::vector<int64_t> prefix;
  for (const SeqShape& s : step) prefix.push_back(s.first);
  for (const DType kv : {DType::F32, DType::BF16}) {
    for (const HeadShape& s : std::vector<HeadShape>{
             {16, 4, 4}, {64, 8, 2}, {80, 6, 2}, {128, 4, 1}, {256, 4, 4}, {256, 8, 2}}) {
      Pair p(kv);
      p.prepare(config_of(s.head_dim, 2), s.heads, s.kv_heads, blocks, bs);
      const auto tables = tables_for(contexts, bs, blocks - 1);
      const std::string what = shape_name(kv, s);
      fill_prefixes(p, prefix, tables, s.heads, s.kv_heads, s.head_dim, 0, 256, what);
      attention_step(p, step, tables, s.heads, s.kv_heads, s.head_dim, 0, 9, what + " prompts");
    }
  }
}

// Decode steps run as CUDA graphs: a graph captured at one context and replayed at longer
// ones (within the split's bucket, and without a split) must read the new positions, and a
// step whose longest context crosses into the next bucket (more partitions) must get a graph
// of its own. Every step is compared with the CPU.
TEST(CudaOps, ReplayedDecodeGraphsMatchTheCpuAsContextsGrow) {
  REQUIRE_GPU();
  const int64_t heads = 4, kv_heads = 1, head_dim = 128;
  const int32_t bs = 16, blocks = 200;
  for (const int32_t start : {500, 1020}) {  // 500: one pass up to 512 keys, then split
    Pair p(DType::BF16);
    p.gpu.set_graphs(true);
    p.prepare(config_of(head_dim, 2), heads, kv_heads, blocks, bs);
    const std::vector<int64_t> prefix{start, 40};
    const auto tables = tables_for({start + 20, 60}, bs, blocks - 1);
    fill_prefixes(p, prefix, tables, heads, kv_heads, head_dim, 1, 512, "graphs");
    AttentionTensors tensors;  // the same storage every step, as a replayed graph reads it
    const int64_t replays_before = p.gpu.graph_replays();
    for (int32_t t = 0; t < 16; ++t) {
      const std::vector<int32_t> ids{1, 1}, pos{start + t, 40 + t};
      const std::vector<AttentionSequence> seqs{{0, 1, start + t, tables[0]},
                                                {1, 1, 40 + t, tables[1]}};
      const std::vector<int64_t> logit_rows{0, 1};
      p.begin_step({ids, pos, seqs, logit_rows});
      const std::vector<float> q =
          random_floats(size_t(2 * heads * head_dim), uint32_t(50 + t), 2.0f);
      const std::vector<float> k =
          random_floats(size_t(2 * kv_heads * head_dim), uint32_t(70 + t), 2.0f);
      const std::vector<float> v = random_floats(size_t(2 * kv_heads * head_dim), uint32_t(90 + t));
      tensors.upload(p, q, k, v, 2, heads * head_dim, kv_heads * head_dim);
      tensors.compare(p, 1, "graph step at context " + std::to_string(start + t + 1),
                      [&](const std::function<void()>& body) { p.gpu.run_step(2, body); });
    }
    // Per bucket: the first step runs eagerly, the second is captured, the rest replay.
    EXPECT_GE(p.gpu.graph_replays() - replays_before, 10) << "start " << start;
  }
}

TEST(CudaOps, GatherLogitRowsFollowsTheStepsOrder) {
  REQUIRE_GPU();
  Pair p;
  p.prepare(config_of(16), 1, 1, 8, 16);
  OneSequence step(12, 0, 16);
  p.begin_step(step.inputs());
  const std::vector<float> x = random_floats(12 * 50, 40);
  Tensor xc, xg, c, g;
  p.cpu.upload(x.data(), 12, 50, xc);
  p.gpu.upload(x.data(), 12, 50, xg);
  p.cpu.gather_logit_rows(xc, c);
  poison(p.gpu, g, 12, 50);
  p.gpu.gather_logit_rows(xg, g);
  expect_close(host_of(p.gpu, g), host_of(p.cpu, c), 0, 0, "gather_logit_rows");
}

TEST(CudaOps, TensorsOfTheWrongDeviceAreRefusedByName) {
  REQUIRE_GPU();
  Pair p;
  Tensor host, out;
  const std::vector<float> x(64, 1.0f);
  p.cpu.upload(x.data(), 1, 64, host);
  try {
    p.gpu.add(host, host);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("add: tensor is on cpu"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace dsmath
