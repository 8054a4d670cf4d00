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
#include <numeric>
#include <vector>

#include "common/checkpoint/model_config.h"
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
    p.cpu.embedding(p.cpu.place(host), 200, c);
    poison(p.gpu, g, 40, cols);
    p.gpu.embedding(p.gpu.place(host), 200, g);
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

// A mixed step as the engine makes them: a prompt chunk after a cached prefix, a whole prompt,
// and single decode tokens, over blocks given out of order; grouped-query heads.
struct MixedStep {
  std::vector<int32_t> ids, positions;
  std::vector<std::vector<int32_t>> tables;
  std::vector<AttentionSequence> seqs;
  std::vector<int64_t> logit_rows;
  explicit MixedStep(int32_t block_size) {
    struct S {
      int64_t tokens;
      int32_t first;
    };
    const std::vector<S> shape{{37, 20}, {9, 0}, {1, 300}, {1, 0}, {1, 16}};
    int32_t next_block = 63;
    for (const S& s : shape) {
      std::vector<int32_t> table;
      for (int32_t b = 0; b * block_size < s.first + s.tokens; ++b) table.push_back(next_block--);
      tables.push_back(table);
    }
    for (size_t i = 0; i < shape.size(); ++i) {
      seqs.push_back({int64_t(ids.size()), shape[i].tokens, shape[i].first, tables[i]});
      for (int64_t t = 0; t < shape[i].tokens; ++t) {
        ids.push_back(1);
        positions.push_back(shape[i].first + int32_t(t));
      }
      logit_rows.push_back(int64_t(ids.size()) - 1);
    }
  }
  StepInputs inputs() const { return {ids, positions, seqs, logit_rows}; }
};

TEST(CudaOps, PagedAttentionMatchesTheCpuForPrefillAndDecodeRows) {
  REQUIRE_GPU();
  for (const DType kv : {DType::F32, DType::BF16}) {
    for (const int64_t head_dim : {16, 64, 80, 128, 256}) {
      const int64_t heads = 8, kv_heads = 2;
      const int32_t bs = 16;
      Pair p(kv);
      p.prepare(config_of(head_dim, 2), heads, kv_heads, 64, bs);
      MixedStep step(bs);
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
      Tensor qc, kc, vc, qg, kg, vg, c, g;
      p.cpu.upload(q.data(), rows, heads * head_dim, qc);
      p.cpu.upload(k.data(), rows, kv_heads * head_dim, kc);
      p.cpu.upload(v.data(), rows, kv_heads * head_dim, vc);
      p.gpu.upload(q.data(), rows, heads * head_dim, qg);
      p.gpu.upload(k.data(), rows, kv_heads * head_dim, kg);
      p.gpu.upload(v.data(), rows, kv_heads * head_dim, vg);
      p.cpu.attention(1, qc, kc, vc, c);
      poison(p.gpu, g, rows, heads * head_dim);
      p.gpu.attention(1, qg, kg, vg, g);
      const std::string what = std::string("attention kv ") + std::string(dtype_name(kv)) +
                               " head_dim " + std::to_string(head_dim);
      expect_close(host_of(p.gpu, g), host_of(p.cpu, c), 1e-5f, 1e-4f, what);

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
      Tensor q1c, k1c, v1c, q1g, k1g, v1g, o1c, o1g;
      p.cpu.upload(q.data(), 1, heads * head_dim, q1c);
      p.cpu.upload(k.data(), 1, kv_heads * head_dim, k1c);
      p.cpu.upload(v.data(), 1, kv_heads * head_dim, v1c);
      p.gpu.upload(q.data(), 1, heads * head_dim, q1g);
      p.gpu.upload(k.data(), 1, kv_heads * head_dim, k1g);
      p.gpu.upload(v.data(), 1, kv_heads * head_dim, v1g);
      p.cpu.attention(0, q1c, k1c, v1c, o1c);
      poison(p.gpu, o1g, 1, heads * head_dim);
      p.gpu.attention(0, q1g, k1g, v1g, o1g);
      expect_close(host_of(p.gpu, o1g), host_of(p.cpu, o1c), 1e-5f, 1e-4f, what + " after copy");
    }
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
