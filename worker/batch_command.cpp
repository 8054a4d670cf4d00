#include "worker/batch_command.h"

#include <algorithm>
#include <chrono>
#include <iostream>
#include <optional>
#include <unordered_map>

#include "common/core/error.h"
#include "common/text/text_stream.h"
#include "worker/engine/engine.h"
#include "worker/serve/link_codec.h"

namespace dsmath {
namespace {

using Clock = std::chrono::steady_clock;

// One run in flight: its samples' text and counts as the engine's events arrive.
struct InFlight {
  struct Sample {
    explicit Sample(TextStream text) : text(std::move(text)) {}
    TextStream text;
    int64_t tokens = 0;
    double cumulative_logprob = 0;
  };
  SampleRun run;
  int64_t prompt_tokens = 0;
  std::vector<Sample> samples;
  int64_t unfinished = 0;
};

// OpenAI's finish_reason: "stop" covers EOS, stop tokens and stop strings.
std::string finish_reason(FinishReason f, bool by_string) {
  if (by_string || f == FinishReason::kEos || f == FinishReason::kStopToken ||
      f == FinishReason::kStop)
    return "stop";
  return f == FinishReason::kLength ? "length" : "error";
}

void drive(BatchJob& job, Engine& engine, const Tokenizer& tokenizer) {
  const int64_t max_run =
      std::min<int64_t>(engine.config().max_samples, engine.config().max_running);
  const std::vector<SampleRun> runs = job.remaining(max_run);
  const int64_t window = 2 * int64_t(engine.config().max_running);
  std::unordered_map<std::string, InFlight> in_flight;
  int64_t in_flight_samples = 0;
  size_t next = 0;
  while (next < runs.size() || !in_flight.empty()) {
    while (next < runs.size() && in_flight_samples < window) {
      const SampleRun& run = runs[next++];
      const JobProblem& p = *run.problem;
      EngineRequest r;
      r.key = cat(p.id, "#", run.first);
      r.rng_key = p.id;  // with the seed and the sample index: the key (seed, id, sample_index)
      r.first_sample = uint64_t(run.first);
      r.prompt = job.prompt_of(p);
      r.params = sampling_params(job.sampling_of(p));
      r.n = int32_t(run.count);
      InFlight& f = in_flight[r.key];
      f.run = run;
      f.prompt_tokens = int64_t(r.prompt.size());
      f.unfinished = run.count;
      const std::vector<std::string> stop = job.stop_of(p);
      for (int64_t i = 0; i < run.count; ++i) f.samples.emplace_back(TextStream(tokenizer, stop));
      in_flight_samples += run.count;
      engine.add(std::move(r));
    }
    for (EngineEvent& e : engine.step()) {
      InFlight& f = in_flight.at(e.key);
      if (e.sample_index < 0) {  // refused as a whole: not written, so a resume tries again
        job.refused(f.run, e.error);
        f.unfinished = 0;
      } else {
        InFlight::Sample& s = f.samples[size_t(e.sample_index)];
        if (e.token) {
          ++s.tokens;
          job.generated_tokens(1);
          s.cumulative_logprob += e.token->logprob;
          s.text.push(e.token->token);
          if (s.text.stopped() && e.finish == FinishReason::kNone)
            engine.stop(e.key, e.sample_index);
        }
        if (e.finish != FinishReason::kNone) {
          s.text.finish();
          FinishedSample done;
          done.text = s.text.text();
          done.finish_reason = finish_reason(e.finish, s.text.stopped());
          if (s.text.stopped()) done.stop_string = s.text.matched_stop();
          if (e.finish == FinishReason::kError) done.error = e.error;
          done.prompt_tokens = f.prompt_tokens;
          done.completion_tokens = s.tokens;
          done.cumulative_logprob = s.cumulative_logprob;
          job.finished(f.run, e.sample_index, done);
          --f.unfinished;
        }
      }
      if (f.unfinished == 0) {
        in_flight_samples -= f.run.count;
        in_flight.erase(e.key);
      }
    }
    job.tick();
  }
}

}  // namespace

int run_batch(const BatchOptions& o, Communicator& comm) {
  std::optional<BatchJob> job;  // on the driver
  ModelGroup group(o.group, comm, [&](const Tokenizer& tokenizer) {
    JobSpec spec = o.job;
    spec.model_dir = o.group.model_dir;
    sampling_params(spec.sampling).validate();
    job.emplace(spec, tokenizer);
  });
  if (!group.is_driver()) {
    group.runner().follow();
    return 0;
  }
  if (job->cut_bytes() > 0)
    std::cerr << "dsmath-worker: " << o.job.output << ": cut a torn last line (" << job->cut_bytes()
              << " bytes) left by an interrupted run\n";
  if (job->input_errors() > 0)
    std::cerr << "dsmath-worker: " << job->input_errors() << " input line(s) skipped, see "
              << o.job.output << ".errors.jsonl\n";
  const Clock::time_point start = Clock::now();
  {
    Engine engine(group.runner(), group.engine_config());
    drive(*job, engine, group.tokenizer());
  }
  group.runner().shutdown();
  const nlohmann::json summary =
      job->finish(std::chrono::duration<double>(Clock::now() - start).count());
  std::cerr << "dsmath-worker: " << summary["overall"].dump() << "\n";
  return 0;
}

}  // namespace dsmath
