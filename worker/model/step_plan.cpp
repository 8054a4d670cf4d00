#include "worker/model/step_plan.h"

#include "common/core/error.h"

namespace dsmath {

// Layout: flags, #copies, (src, dst)*, #sequences, then per sequence:
// first_position, logits, #tokens, tokens*, #blocks, blocks*; then #sampling, sampling*.
std::vector<int32_t> StepPlan::serialize() const {
  std::vector<int32_t> w;
  w.push_back(int32_t(all_logits) | int32_t(shutdown) << 1 | int32_t(idle) << 2);
  w.push_back(int32_t(copies.size()));
  for (const KVBlockCopy& c : copies) w.insert(w.end(), {c.src, c.dst});
  w.push_back(int32_t(sequences.size()));
  for (const StepSequence& s : sequences) {
    w.push_back(s.first_position);
    w.push_back(int32_t(s.logits));
    w.push_back(int32_t(s.tokens.size()));
    w.insert(w.end(), s.tokens.begin(), s.tokens.end());
    w.push_back(int32_t(s.block_table.size()));
    w.insert(w.end(), s.block_table.begin(), s.block_table.end());
  }
  w.push_back(int32_t(sampling.size()));
  w.insert(w.end(), sampling.begin(), sampling.end());
  return w;
}

StepPlan StepPlan::deserialize(std::span<const int32_t> w) {
  size_t at = 0;
  auto next = [&]() {
    DSMATH_CHECK(at < w.size(), "step plan truncated at word ", at);
    return w[at++];
  };
  auto count = [&]() {
    const int32_t n = next();
    DSMATH_CHECK(n >= 0 && size_t(n) <= w.size() - at, "step plan: bad count ", n, " at word ", at);
    return size_t(n);
  };
  StepPlan p;
  const int32_t flags = next();
  p.all_logits = flags & 1;
  p.shutdown = flags & 2;
  p.idle = flags & 4;
  for (size_t i = count(); i > 0; --i) p.copies.push_back({next(), next()});
  for (size_t i = count(); i > 0; --i) {
    StepSequence s;
    s.first_position = next();
    s.logits = next() != 0;
    for (size_t n = count(); n > 0; --n) s.tokens.push_back(next());
    for (size_t n = count(); n > 0; --n) s.block_table.push_back(next());
    p.sequences.push_back(std::move(s));
  }
  for (size_t n = count(); n > 0; --n) p.sampling.push_back(next());
  DSMATH_CHECK(at == w.size(), "step plan has ", w.size() - at, " trailing words");
  return p;
}

}  // namespace dsmath
