#include "common/jobs/summary.h"

#include <algorithm>

#include "common/jobs/answer.h"

namespace dsmath {

double pass_at_k(int64_t n, int64_t c, int64_t k) {
  if (k <= 0 || n <= 0) return 0;
  k = std::min(k, n);
  if (n - c < k) return 1.0;
  // 1 - prod_{i = n-c+1}^{n} (1 - k / i), the numerically stable form.
  double fail = 1.0;
  for (int64_t i = n - c + 1; i <= n; ++i) fail *= 1.0 - double(k) / double(i);
  return 1.0 - fail;
}

void JobSummary::add(const GradedSample& s) {
  Problem& p = problems_[s.id];
  ++p.samples;
  completion_tokens_ += s.completion_tokens;
  if (s.correct) {
    p.graded = true;
    p.correct += *s.correct;
  }
  if (!s.answer) return;
  auto& [votes, correct, first] =
      p.votes.try_emplace(normalize_answer(*s.answer), 0, false, s.sample_index).first->second;
  ++votes;
  correct = correct || s.correct.value_or(false);
  first = std::min(first, s.sample_index);
}

nlohmann::json JobSummary::to_json(double seconds, int64_t samples_this_run,
                                   int64_t tokens_this_run) const {
  nlohmann::json problems = nlohmann::json::object();
  double maj = 0, pass1 = 0, passk = 0;
  int64_t graded = 0, samples = 0, graded_samples = 0, correct = 0;
  for (const auto& [id, p] : problems_) {
    // The most votes; a tie goes to the answer that appeared at the lowest sample index.
    const std::string* majority = nullptr;
    std::tuple<int64_t, bool, int64_t> best{0, false, 0};
    for (const auto& [answer, v] : p.votes)
      if (!majority || std::get<0>(v) > std::get<0>(best) ||
          (std::get<0>(v) == std::get<0>(best) && std::get<2>(v) < std::get<2>(best))) {
        majority = &answer;
        best = v;
      }
    nlohmann::json j = {{"samples", p.samples},
                        {"majority_answer", majority ? nlohmann::json(*majority) : nullptr}};
    samples += p.samples;
    if (p.graded) {
      const bool maj_correct = majority && std::get<1>(best);
      j["correct"] = p.correct;
      j["maj@k"] = maj_correct ? 1.0 : 0.0;
      j["pass@1"] = pass_at_k(p.samples, p.correct, 1);
      j["pass@k"] = pass_at_k(p.samples, p.correct, k_);
      ++graded;
      graded_samples += p.samples;
      correct += p.correct;
      maj += maj_correct;
      pass1 += pass_at_k(p.samples, p.correct, 1);
      passk += pass_at_k(p.samples, p.correct, k_);
    }
    problems[id] = std::move(j);
  }
  nlohmann::json overall = {{"problems", problems_.size()},
                            {"graded_problems", graded},
                            {"samples", samples},
                            {"k", k_},
                            {"completion_tokens", completion_tokens_}};
  if (graded > 0) {
    overall["maj@k"] = maj / double(graded);
    overall["pass@1"] = pass1 / double(graded);
    overall["pass@k"] = passk / double(graded);
    overall["mean_accuracy"] = double(correct) / double(graded_samples);
  }
  if (seconds > 0) {
    overall["seconds"] = seconds;
    overall["samples_per_second"] = double(samples_this_run) / seconds;
    overall["tokens_per_second"] = double(tokens_this_run) / seconds;
  }
  return {{"overall", overall}, {"problems", problems}};
}

}  // namespace dsmath
