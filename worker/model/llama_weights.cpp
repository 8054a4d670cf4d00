#include "worker/model/llama_weights.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <string>

namespace dsmath {
namespace {

class Binder {
 public:
  Binder(const Checkpoint& ckpt, Backend& backend, LlamaWeights& out)
      : ckpt_(ckpt), backend_(backend), out_(out) {}

  // Rows [first, first + count) of a [rows, cols] matrix: contiguous, so a view.
  WeightView rows(const std::string& name, int64_t rows, int64_t cols, int64_t first,
                  int64_t count) {
    const WeightView mapped = mapped_rows(name, rows, cols, first, count);
    return release_if_packed(mapped, backend_.place(mapped));
  }

  // The same, as a table the forward only looks rows up in.
  WeightView table(const std::string& name, int64_t rows, int64_t cols, int64_t first,
                   int64_t count) {
    return backend_.place_table(mapped_rows(name, rows, cols, first, count));
  }

  // Matrices the forward multiplies by the same input, placed together (see StackedWeights).
  StackedWeights stacked(std::initializer_list<WeightView> mapped) {
    StackedWeights placed = backend_.place_stacked(std::vector<WeightView>(mapped));
    for (size_t i = 0; i < mapped.size() && i < placed.parts.size(); ++i)
      release_if_packed(mapped.begin()[i], placed.parts[i]);
    return placed;
  }

  WeightView mapped_rows(const std::string& name, int64_t rows, int64_t cols, int64_t first,
                         int64_t count) {
    const TensorInfo& t = ckpt_.tensor(name, {rows, cols});
    const size_t row_bytes = size_t(cols) * dtype_size(t.dtype);
    return WeightView{t.data + size_t(first) * row_bytes, t.dtype, count, cols};
  }

  // Columns [first, first + count) of a [rows, cols] matrix (a row-parallel layer, summed in
  // `chunks` ranges): strided, so copied, unless the backend packed a copy of its own.
  WeightView columns(const std::string& name, int64_t rows, int64_t cols, int64_t first,
                     int64_t count, int64_t chunks) {
    const TensorInfo& t = ckpt_.tensor(name, {rows, cols});
    if (count == cols) {
      const WeightView mapped{t.data, t.dtype, rows, cols};
      return release_if_packed(mapped, backend_.place_row_parallel(mapped, chunks));
    }
    const size_t elem = dtype_size(t.dtype);
    std::vector<std::byte>& copy = out_.owned.emplace_back(size_t(rows * count) * elem);
    for (int64_t r = 0; r < rows; ++r) {
      std::memcpy(copy.data() + size_t(r * count) * elem,
                  t.data + (size_t(r * cols) + size_t(first)) * elem, size_t(count) * elem);
    }
    release_pages(t.data, t.nbytes);
    WeightView placed =
        backend_.place_row_parallel(WeightView{copy.data(), t.dtype, rows, count}, chunks);
    if (placed.packed != nullptr) {  // only ever read as packed: drop the copy
      placed.data = nullptr;
      out_.owned.pop_back();
    }
    return placed;
  }

  NormWeight vector(const std::string& name, int64_t size) {
    const TensorInfo& t = ckpt_.tensor(name, {size});
    return backend_.place(NormWeight{t.data, t.dtype}, size);
  }

 private:
  // A packed copy is what the kernels read from now on: the mapped pages need not stay resident
  // (they fault back in from the page cache should anything read the rows).
  static WeightView release_if_packed(const WeightView& mapped, const WeightView& placed) {
    if (placed.packed != nullptr)
      release_pages(static_cast<const std::byte*>(mapped.data),
                    size_t(mapped.rows * mapped.cols) * dtype_size(mapped.dtype));
    return placed;
  }

  // Drops mapped pages from this process (they stay in the page cache) so that a rank's
  // resident memory holds its slices, not the whole tensor it copied them from.
  static void release_pages(const std::byte* data, size_t bytes) {
    const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
    const uintptr_t begin = (uintptr_t(data) + page - 1) & ~(page - 1);
    const uintptr_t end = (uintptr_t(data) + bytes) & ~(page - 1);
    if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
  }

  const Checkpoint& ckpt_;
  Backend& backend_;
  LlamaWeights& out_;
};

}  // namespace

LlamaWeights LlamaWeights::bind(const Checkpoint& ckpt, const TpLayout& tp, Backend& backend,
                                int64_t first_layer, int64_t end_layer, bool embedding, bool head) {
  const ModelConfig& c = ckpt.config();
  const int64_t hidden = c.hidden_size, hd = c.head_dim, inter = c.intermediate_size;
  const int64_t q_dim = c.num_attention_heads * hd, kv_dim = c.num_key_value_heads * hd;
  const int64_t local_q = tp.local_heads * hd, local_kv = tp.local_kv_heads * hd;
  const int64_t q_begin = tp.tp_rank * local_q, kv_begin = tp.kv_head_begin * hd;
  const int64_t inter_begin = tp.tp_rank * tp.local_intermediate;

  LlamaWeights w;
  Binder b(ckpt, backend, w);
  // Tied checkpoints usually omit lm_head.weight; some still write it (same values).
  const bool tied = c.tie_word_embeddings && !ckpt.has("lm_head.weight");
  if (embedding) {  // a table, unless it is also the head multiplied here
    auto place = tied && head ? &Binder::rows : &Binder::table;
    w.embed_tokens = (b.*place)("model.embed_tokens.weight", c.vocab_size, hidden, tp.vocab_begin,
                                tp.local_vocab);
  }
  for (int64_t i = first_layer; i < end_layer; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    LayerWeights l;
    l.input_norm = b.vector(p + "input_layernorm.weight", hidden);
    l.qkv_proj = b.stacked(
        {b.mapped_rows(p + "self_attn.q_proj.weight", q_dim, hidden, q_begin, local_q),
         b.mapped_rows(p + "self_attn.k_proj.weight", kv_dim, hidden, kv_begin, local_kv),
         b.mapped_rows(p + "self_attn.v_proj.weight", kv_dim, hidden, kv_begin, local_kv)});
    l.o_proj = b.columns(p + "self_attn.o_proj.weight", hidden, q_dim, q_begin, local_q,
                         row_parallel_chunks(tp.tp_size, local_q));
    l.post_attention_norm = b.vector(p + "post_attention_layernorm.weight", hidden);
    l.gate_up_proj = b.stacked({b.mapped_rows(p + "mlp.gate_proj.weight", inter, hidden,
                                              inter_begin, tp.local_intermediate),
                                b.mapped_rows(p + "mlp.up_proj.weight", inter, hidden, inter_begin,
                                              tp.local_intermediate)});
    l.down_proj =
        b.columns(p + "mlp.down_proj.weight", hidden, inter, inter_begin, tp.local_intermediate,
                  row_parallel_chunks(tp.tp_size, tp.local_intermediate));
    w.layers.push_back(l);
  }
  if (!head) return w;
  w.final_norm = b.vector("model.norm.weight", hidden);
  const char* name = tied ? "model.embed_tokens.weight" : "lm_head.weight";
  w.lm_head = tied && embedding
                  ? w.embed_tokens
                  : b.rows(name, c.vocab_size, hidden, tp.vocab_begin, tp.local_vocab);
  return w;
}

size_t LlamaWeights::bytes(const ModelConfig& config) const {
  auto matrix = [](const WeightView& w) {
    return w.data || w.packed ? size_t(w.rows * w.cols) * dtype_size(w.dtype) : 0;
  };
  auto norm = [&](const NormWeight& n) {
    return n.data ? size_t(config.hidden_size) * dtype_size(n.dtype) : 0;
  };
  size_t total = matrix(embed_tokens) + norm(final_norm);
  if (lm_head.data != embed_tokens.data) total += matrix(lm_head);
  for (const LayerWeights& l : layers) {
    total += norm(l.input_norm) + norm(l.post_attention_norm);
    total += matrix(l.o_proj) + matrix(l.down_proj);
    for (const StackedWeights* s : {&l.qkv_proj, &l.gate_up_proj})
      for (const WeightView& w : s->parts) total += matrix(w);
  }
  return total;
}

std::vector<std::span<const std::byte>> LlamaWeights::step_reads(const ModelConfig& config) const {
  std::vector<std::span<const std::byte>> out;
  auto matrix = [&](const WeightView& w) {
    if (const void* at = w.packed ? w.packed : w.data)
      out.emplace_back(static_cast<const std::byte*>(at),
                       size_t(w.rows * w.cols) * dtype_size(w.dtype));
  };
  auto norm = [&](const NormWeight& n) {
    if (n.data)
      out.emplace_back(static_cast<const std::byte*>(n.data),
                       size_t(config.hidden_size) * dtype_size(n.dtype));
  };
  matrix(lm_head);
  norm(final_norm);
  for (const LayerWeights& l : layers) {
    norm(l.input_norm);
    norm(l.post_attention_norm);
    matrix(l.o_proj);
    matrix(l.down_proj);
    for (const StackedWeights* s : {&l.qkv_proj, &l.gate_up_proj})
      for (const WeightView& w : s->parts) matrix(w);
  }
  return out;
}

}  // namespace dsmath
