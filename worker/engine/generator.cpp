#include "worker/engine/generator.h"

#include <algorithm>
#include <deque>
#include <optional>
#include <unordered_map>

#include "common/core/error.h"

namespace dsmath {
namespace {

struct Sequence {
  const GenerationRequest* request;
  IncrementalDetokenizer detokenizer;
  std::vector<int32_t> history;  // prompt + generated
  int64_t capacity;              // positions it may use: prompt + max_new_tokens, within context
  int32_t reserved_blocks;
  BlockTable table;
  GenerationResult result;
  // Set while this sequence waits for another one with the same prompt to prefill it: it then
  // forks that sequence's blocks instead of computing the prompt again.
  Sequence* prefill_leader = nullptr;
};

bool contains(const std::vector<int32_t>& ids, int32_t id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

// Earliest occurrence of any stop string that ends in the text added since `checked_from`.
std::optional<size_t> find_stop(const std::string& text, size_t checked_from,
                                const std::vector<std::string>& stops) {
  std::optional<size_t> best;
  for (const std::string& s : stops) {
    const size_t from = checked_from >= s.size() ? checked_from - s.size() + 1 : 0;
    const size_t at = text.find(s, from);
    if (at != std::string::npos && (!best || at < *best)) best = at;
  }
  return best;
}

// Appends the sampled token and decides whether the sequence is finished.
void accept_token(Sequence& s, const SampledToken& t, const std::vector<int32_t>& eos_ids) {
  const SamplingParams& p = s.request->params;
  GenerationResult& out = s.result;
  s.history.push_back(t.token);
  out.token_ids.push_back(t.token);
  out.logprobs.push_back(t.logprob);
  if (p.top_logprobs > 0) out.top_logprobs.push_back(t.top);

  const bool eos = !p.ignore_eos && contains(eos_ids, t.token);
  if (eos || contains(p.stop_token_ids, t.token)) {
    out.text += s.detokenizer.flush();
    out.finish_reason = "stop";
    return;
  }
  const size_t checked = out.text.size();
  out.text += s.detokenizer.push(t.token);
  if (auto at = find_stop(out.text, checked, p.stop)) {
    out.text.resize(*at);
    out.finish_reason = "stop";
  } else if (int64_t(out.token_ids.size()) >= p.max_new_tokens ||
             int64_t(s.history.size()) >= s.capacity) {
    out.text += s.detokenizer.flush();
    out.finish_reason = "length";
  }
}

}  // namespace

Generator::Generator(ModelRunner& runner, const Tokenizer& tokenizer,
                     std::vector<int32_t> eos_token_ids)
    : runner_(runner),
      tokenizer_(tokenizer),
      eos_token_ids_(std::move(eos_token_ids)),
      blocks_(runner.model().kv_blocks(), runner.model().block_size()) {}

int64_t check_request(const LlamaModel& model, const GenerationRequest& r, size_t index) {
  r.params.validate();
  const int64_t context = model.config().max_position_embeddings;
  const int64_t prompt_len = int64_t(r.prompt.size());
  DSMATH_CHECK(prompt_len > 0, "request ", index, ": the prompt has no tokens");
  DSMATH_CHECK(prompt_len < context, "request ", index, ": the prompt has ", prompt_len,
               " tokens, the model's context (max_position_embeddings) is ", context);
  // Written so that a huge max_new_tokens ("unlimited") cannot overflow.
  const int64_t capacity =
      prompt_len + std::min(std::max<int64_t>(r.params.max_new_tokens, 1), context - prompt_len);
  const int64_t blocks = (capacity + model.block_size() - 1) / model.block_size();
  DSMATH_CHECK(blocks <= model.kv_blocks(), "request ", index, ": prompt + max_new_tokens needs ",
               blocks, " KV blocks, the cache has ", model.kv_blocks(),
               "; lower max_new_tokens or give the KV cache more memory");
  return capacity;
}

std::vector<GenerationResult> Generator::generate(const std::vector<GenerationRequest>& requests) {
  const int32_t block_size = blocks_.block_size();
  std::vector<Sequence> seqs;
  seqs.reserve(requests.size());
  std::deque<Sequence*> waiting;
  for (size_t i = 0; i < requests.size(); ++i) {
    const GenerationRequest& r = requests[i];
    const int64_t prompt_len = int64_t(r.prompt.size());
    const int64_t capacity = check_request(runner_.model(), r, i);
    const int32_t need = int32_t((capacity + block_size - 1) / block_size);
    seqs.push_back(Sequence{&r, IncrementalDetokenizer(tokenizer_, /*skip_special_tokens=*/true),
                            r.prompt, capacity, need, BlockTable{}, GenerationResult{}});
    seqs.back().result.prompt_tokens = prompt_len;
    if (r.params.max_new_tokens == 0) {
      seqs.back().result.finish_reason = "length";
    } else {
      waiting.push_back(&seqs.back());
    }
  }

  std::vector<Sequence*> running;
  // On an error mid-run, give the running sequences' blocks back: the Generator outlives it.
  struct ReleaseOnError {
    BlockManager& blocks;
    std::vector<Sequence*>& running;
    ~ReleaseOnError() {
      for (Sequence* s : running) blocks.free(s->table);
    }
  } release{blocks_, running};
  int32_t reserved = 0;
  while (!waiting.empty() || !running.empty()) {
    // Admit in arrival order while the worst case of every running sequence still fits.
    // Samples of the same prompt admitted together share one prefill (n samples per problem).
    std::vector<Sequence*> admitted;
    while (!waiting.empty() &&
           reserved + waiting.front()->reserved_blocks <= blocks_.num_blocks()) {
      Sequence* s = waiting.front();
      waiting.pop_front();
      reserved += s->reserved_blocks;
      for (Sequence* other : admitted) {
        if (other->prefill_leader == nullptr && other->history == s->history) {
          s->prefill_leader = other;
          shared_prefill_tokens_ += int64_t(s->history.size());
          break;
        }
      }
      admitted.push_back(s);
      running.push_back(s);
    }

    // One plan row per sequence that computes something; followers read their leader's row.
    StepPlan plan;
    std::unordered_map<const Sequence*, int64_t> row_of;
    for (Sequence* s : running) {
      if (s->prefill_leader) continue;
      const int32_t done = s->table.num_tokens;  // positions already in the cache
      StepSequence step;
      step.first_position = done;
      step.tokens.assign(s->history.begin() + done, s->history.end());
      for (const BlockCopy& c : blocks_.append(s->table, int32_t(step.tokens.size())))
        plan.copies.push_back({c.src, c.dst});
      step.block_table = s->table.blocks;
      row_of[s] = int64_t(plan.sequences.size());
      plan.sequences.push_back(std::move(step));
    }
    const std::vector<float> logits = runner_.step(plan);
    for (Sequence* s : running) {
      if (!s->prefill_leader) continue;
      s->table = blocks_.fork(s->prefill_leader->table);  // before the leader can finish
      row_of[s] = row_of.at(s->prefill_leader);
      s->prefill_leader = nullptr;
    }

    const int64_t vocab = runner_.model().config().vocab_size;
    std::vector<Sequence*> still_running;
    for (size_t b = 0; b < running.size(); ++b) {
      Sequence& s = *running[b];
      const std::span<const float> row(logits.data() + row_of.at(&s) * vocab, size_t(vocab));
      accept_token(s,
                   sample_token(row, s.request->params, s.history, s.request->prompt.size(),
                                s.request->sample_index, s.result.token_ids.size()),
                   eos_token_ids_);
      if (s.result.finish_reason.empty()) {
        still_running.push_back(&s);
      } else {
        blocks_.free(s.table);
        reserved -= s.reserved_blocks;
      }
    }
    running.swap(still_running);
  }

  std::vector<GenerationResult> results;
  for (Sequence& s : seqs) {
    s.result.completion_tokens = int64_t(s.result.token_ids.size());
    results.push_back(std::move(s.result));
  }
  return results;
}

}  // namespace dsmath
