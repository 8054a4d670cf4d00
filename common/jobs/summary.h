// The summary of a graded job: per problem the majority answer, maj@k and pass@k; overall
// maj@k, pass@1 and pass@k (the unbiased estimator 1 - C(n-c, k) / C(n, k) of Chen et al.),
// mean accuracy, and throughput. Samples may arrive in any order.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace dsmath {

struct GradedSample {
  std::string id;
  int64_t sample_index = 0;
  std::optional<std::string> answer;  // extracted
  std::optional<bool> correct;        // when the problem has a reference
  int64_t completion_tokens = 0;
};

// pass@k for n samples of which c are correct.
double pass_at_k(int64_t n, int64_t c, int64_t k);

class JobSummary {
 public:
  explicit JobSummary(int64_t k) : k_(k) {}
  void add(const GradedSample& sample);
  // `seconds`: wall time of this run, for samples/s and tokens/s of the samples it made.
  nlohmann::json to_json(double seconds, int64_t samples_this_run, int64_t tokens_this_run) const;

 private:
  struct Problem {
    int64_t samples = 0, correct = 0;
    bool graded = false;
    // answer_key -> (votes, correct, first sample index), for the majority vote.
    std::map<std::string, std::tuple<int64_t, bool, int64_t>> votes;
  };
  int64_t k_;
  std::map<std::string, Problem> problems_;  // by id, sorted for a stable summary
  int64_t completion_tokens_ = 0;
};

}  // namespace dsmath
