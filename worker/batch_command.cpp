#include "worker/batch_command.h"

#include <algorithm>
#include <fstream>
#include <iostream>
#include <optional>
#include <unordered_map>

#include "common/checkpoint/fingerprint.h"
#include "common/core/error.h"
#include "common/jobs/answer.h"
#include "common/jobs/few_shot.h"
#include "common/jobs/progress.h"
#include "common/jobs/sample_log.h"
#include "common/jobs/summary.h"
#include "common/text/prompt.h"
#include "common/text/text_stream.h"
#include "worker/engine/engine.h"

namespace dsmath {
namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// The settings that decide the samples: a resumed job must run with the same ones.
Json job_settings(const BatchOptions& o, const std::optional<FewShotTemplate>& few_shot) {
  const SamplingParams& p = o.params;
  return {{"model_fingerprint", model_fingerprint(o.group.model_dir)},
          {"n", o.n},
          {"temperature", p.temperature},
          {"top_p", p.top_p},
          {"top_k", p.top_k},
          {"min_p", p.min_p},
          {"max_new_tokens", p.max_new_tokens},
          {"seed", p.seed},
          {"stop", o.stop},
          {"chat", o.chat},
          {"cot", o.cot},
          {"template", few_shot ? Json(few_shot->text) : Json(nullptr)},
          {"template_stop", few_shot ? Json(few_shot->stop) : Json(nullptr)},
          {"fields", {o.fields.id_field, o.fields.prompt_field, o.fields.answer_field}},
          {"output_format", o.output_format}};
}

// One problem's samples first .. first + count - 1 in flight as one engine request.
struct Run {
  const JobProblem* problem = nullptr;
  int64_t first = 0, count = 0;
};

struct SampleState {
  explicit SampleState(TextStream text) : text(std::move(text)) {}
  TextStream text;
  int64_t tokens = 0;
  double cumulative_logprob = 0;
};

class BatchJob {
 public:
  BatchJob(const BatchOptions& o, const Tokenizer& tokenizer, JobInput input,
           std::optional<FewShotTemplate> few_shot, SampleLog& log, std::ofstream& errors)
      : o_(o),
        tokenizer_(tokenizer),
        input_(std::move(input)),
        few_shot_(std::move(few_shot)),
        log_(log),
        errors_(errors),
        summary_(o.n),
        progress_("batch") {}

  void run(Engine& engine);
  const JobSummary& summary() const { return summary_; }
  int64_t samples_this_run() const { return samples_this_run_; }
  int64_t tokens_this_run() const { return counts_.tokens; }

 private:
  struct InFlight {
    Run run;
    int32_t prompt_tokens = 0;
    std::vector<SampleState> samples;
    int64_t unfinished = 0;
  };
  std::vector<int32_t> prompt_of(const JobProblem& p) const;
  SamplingParams params_of(const JobProblem& p) const;
  std::vector<std::string> stop_of(const JobProblem& p) const;
  int64_t n_of(const JobProblem& p) const { return p.n.value_or(o_.n); }
  void start(Engine& engine, const Run& run);
  void finish(InFlight& f, int64_t i, const EngineEvent& e);
  Json line_of(const InFlight& f, int64_t i, const EngineEvent& e, const std::string& text,
               const std::optional<std::string>& answer, std::optional<bool> correct) const;
  void count_existing();

  const BatchOptions& o_;
  const Tokenizer& tokenizer_;
  JobInput input_;
  std::optional<FewShotTemplate> few_shot_;
  SampleLog& log_;
  std::ofstream& errors_;
  JobSummary summary_;
  Progress progress_;
  ProgressCounts counts_;
  std::unordered_map<std::string, int64_t> unfinished_of_problem_;
  std::unordered_map<std::string, const JobProblem*> problem_by_id_;
  std::unordered_map<std::string, InFlight> in_flight_;
  int64_t samples_this_run_ = 0;
};

std::vector<int32_t> BatchJob::prompt_of(const JobProblem& p) const {
  const CotLanguage cot = o_.cot.empty()   ? CotLanguage::kNone
                          : o_.cot == "zh" ? CotLanguage::kChinese
                                           : CotLanguage::kEnglish;
  if (!p.messages.empty()) return build_chat_prompt(tokenizer_, p.messages, cot);
  if (p.openai) return tokenizer_.encode(p.prompt, true);  // /v1/completions: as it is
  if (few_shot_) return tokenizer_.encode(few_shot_->render(p.prompt), true);
  return build_prompt(tokenizer_, p.prompt, {o_.chat, cot});
}

SamplingParams BatchJob::params_of(const JobProblem& p) const {
  SamplingParams params = o_.params;
  if (p.max_tokens) params.max_new_tokens = *p.max_tokens;
  if (p.temperature) params.temperature = *p.temperature;
  if (p.top_p) params.top_p = *p.top_p;
  if (p.seed) params.seed = *p.seed;
  params.logprobs = true;  // for cumulative_logprob
  return params;
}

std::vector<std::string> BatchJob::stop_of(const JobProblem& p) const {
  std::vector<std::string> stop = o_.stop;
  if (few_shot_ && !p.openai)
    stop.insert(stop.end(), few_shot_->stop.begin(), few_shot_->stop.end());
  stop.insert(stop.end(), p.stop.begin(), p.stop.end());
  return stop;
}

// Samples already in the output count as done, and into the summary (graded again, so that a
// summary after a resume covers every sample).
void BatchJob::count_existing() {
  for (const JobProblem& p : input_.problems) {
    problem_by_id_[p.id] = &p;
    counts_.samples_total += n_of(p);
    unfinished_of_problem_[p.id] = n_of(p);
  }
  counts_.problems_total = int64_t(input_.problems.size());
  for (const Json& line : log_.existing()) {
    const auto [id, index] = SampleLog::key_of(line);
    auto it = problem_by_id_.find(id);
    // From another input, or beyond this problem's n: kept in the file, not counted.
    if (it == problem_by_id_.end() || index >= n_of(*it->second)) continue;
    const Json* text = &line;  // where the text lives: native "text", or the OpenAI choice
    int64_t tokens = line.value("completion_tokens", int64_t(0));
    if (!line.contains("text")) {
      const Json& body = line.at("response").at("body");
      const Json& choice = body.at("choices").at(0);
      text = choice.contains("text") ? &choice.at("text") : &choice.at("message").at("content");
      tokens = body.at("usage").value("completion_tokens", int64_t(0));
    } else {
      text = &line.at("text");
    }
    GradedSample g{id, index, extract_answer(text->get<std::string>()), std::nullopt, tokens};
    if (it->second->reference)
      g.correct = g.answer && answers_equal(*g.answer, *it->second->reference);
    summary_.add(g);
    ++counts_.samples_done;
    if (--unfinished_of_problem_[id] == 0) ++counts_.problems_done;
  }
}

void BatchJob::start(Engine& engine, const Run& run) {
  const JobProblem& p = *run.problem;
  EngineRequest r;
  r.key = cat(p.id, "#", run.first);
  r.rng_key = p.id;  // with the seed and the sample index: the RNG key (seed, id, sample_index)
  r.first_sample = uint64_t(run.first);
  r.prompt = prompt_of(p);
  r.params = params_of(p);
  r.n = int32_t(run.count);
  InFlight& f = in_flight_[r.key];
  f.run = run;
  f.prompt_tokens = int32_t(r.prompt.size());
  f.unfinished = run.count;
  const std::vector<std::string> stop = stop_of(p);
  for (int64_t i = 0; i < run.count; ++i) f.samples.emplace_back(TextStream(tokenizer_, stop));
  engine.add(std::move(r));
}

Json BatchJob::line_of(const InFlight& f, int64_t i, const EngineEvent& e, const std::string& text,
                       const std::optional<std::string>& answer,
                       std::optional<bool> correct) const {
  const JobProblem& p = *f.run.problem;
  const SampleState& s = f.samples[size_t(i)];
  const int64_t index = f.run.first + i;
  const bool by_string = s.text.stopped();
  const std::string finish = by_string || e.finish == FinishReason::kEos ||
                                     e.finish == FinishReason::kStopToken ||
                                     e.finish == FinishReason::kStop
                                 ? "stop"
                             : e.finish == FinishReason::kLength ? "length"
                                                                 : "error";
  if (o_.output_format == "openai") {
    Json choice = {{"index", index}, {"finish_reason", finish}, {"logprobs", nullptr}};
    if (p.chat_endpoint)
      choice["message"] = {{"role", "assistant"}, {"content", text}};
    else
      choice["text"] = text;
    return {
        {"id", cat("batch_req_", p.id, "_", index)},
        {"custom_id", p.id},
        {"response",
         {{"status_code", 200},
          {"body",
           {{"object", p.chat_endpoint ? "chat.completion" : "text_completion"},
            {"choices", Json::array({choice})},
            {"usage",
             {{"prompt_tokens", f.prompt_tokens},
              {"completion_tokens", s.tokens},
              {"total_tokens", f.prompt_tokens + s.tokens}}}}}}},
        {"error", e.finish == FinishReason::kError ? Json({{"message", e.error}}) : Json(nullptr)}};
  }
  Json j = {{"id", p.id},
            {"sample_index", index},
            {"text", text},
            {"finish_reason", finish},
            {"prompt_tokens", f.prompt_tokens},
            {"completion_tokens", s.tokens},
            {"cumulative_logprob", s.cumulative_logprob},
            {"extracted_answer", answer ? Json(*answer) : Json(nullptr)}};
  if (by_string) j["stop_reason"] = s.text.matched_stop();
  if (p.reference) {
    j["reference_answer"] = *p.reference;
    j["correct"] = correct.value_or(false);
  }
  if (e.finish == FinishReason::kError) j["error"] = e.error;
  return j;
}

void BatchJob::finish(InFlight& f, int64_t i, const EngineEvent& e) {
  SampleState& s = f.samples[size_t(i)];
  s.text.finish();
  const std::string& text = s.text.text();
  const JobProblem& p = *f.run.problem;
  const std::optional<std::string> answer = extract_answer(text);
  std::optional<bool> correct;
  if (p.reference) correct = answer && answers_equal(*answer, *p.reference);
  log_.append(line_of(f, i, e, text, answer, correct));
  summary_.add({p.id, f.run.first + i, answer, correct, s.tokens});
  ++samples_this_run_;
  ++counts_.samples_done;
  if (--unfinished_of_problem_[p.id] == 0) ++counts_.problems_done;
  --f.unfinished;
}

void BatchJob::run(Engine& engine) {
  count_existing();
  // What is left: for each problem, runs of consecutive sample indices not in the output, each
  // at most as many samples as the engine takes in one request.
  const int64_t max_run =
      std::min<int64_t>(engine.config().max_samples, engine.config().max_running);
  std::vector<Run> runs;
  for (const JobProblem& p : input_.problems)
    for (int64_t k = 0; k < n_of(p); ++k) {
      if (log_.done(p.id, k)) continue;
      Run* last = runs.empty() ? nullptr : &runs.back();
      if (last && last->problem == &p && last->first + last->count == k && last->count < max_run)
        ++last->count;
      else
        runs.push_back({&p, k, 1});
    }
  const int64_t window = 2 * int64_t(engine.config().max_running);
  int64_t in_flight_samples = 0;
  size_t next = 0;
  progress_.update(counts_);
  while (next < runs.size() || !in_flight_.empty()) {
    while (next < runs.size() && in_flight_samples < window) {
      in_flight_samples += runs[next].count;
      start(engine, runs[next++]);
    }
    for (EngineEvent& e : engine.step()) {
      InFlight& f = in_flight_.at(e.key);
      if (e.sample_index < 0) {
        // Refused (the prompt does not fit the context or the KV cache, ...): nothing is written
        // to the output, so a resume with other flags tries these samples again.
        const JobProblem& p = *f.run.problem;
        errors_ << Json({{"line", p.line},
                         {"id", p.id},
                         {"samples", {f.run.first, f.run.first + f.run.count}},
                         {"reason", e.error}})
                       .dump()
                << std::endl;
        std::cerr << "dsmath-worker: problem \"" << p.id << "\" (line " << p.line
                  << "): " << e.error << "\n";
        counts_.samples_total -= f.run.count;
        f.unfinished = 0;
      } else {
        SampleState& s = f.samples[size_t(e.sample_index)];
        if (e.token) {
          ++s.tokens;
          ++counts_.tokens;
          s.cumulative_logprob += e.token->logprob;
          s.text.push(e.token->token);
          if (s.text.stopped() && e.finish == FinishReason::kNone)
            engine.stop(e.key, e.sample_index);
        }
        if (e.finish != FinishReason::kNone) finish(f, e.sample_index, e);
      }
      if (f.unfinished == 0) {
        in_flight_samples -= f.run.count;
        in_flight_.erase(e.key);
      }
    }
    log_.sync_if_due();
    progress_.update(counts_);
  }
  log_.sync();
  progress_.update(counts_, /*final=*/true);
}

}  // namespace

int run_batch(const BatchOptions& o, Communicator& comm) {
  std::optional<JobInput> input;
  std::optional<FewShotTemplate> few_shot;
  std::optional<SampleLog> log;
  std::ofstream errors;
  ModelGroup group(o.group, comm, [&] {
    DSMATH_CHECK(o.n >= 1, "--n must be at least 1, got ", o.n);
    DSMATH_CHECK(o.output_format == "native" || o.output_format == "openai",
                 "--output-format must be native or openai");
    o.params.validate();
    if (!o.template_file.empty()) few_shot = FewShotTemplate::load(o.template_file);
    input = read_job_input(o.input, o.fields);
    check_job_settings(o.output, job_settings(o, few_shot));
    log.emplace(o.output);
    errors.open(o.output + ".errors.jsonl", std::ios::trunc);
    DSMATH_CHECK(errors, "cannot write ", o.output, ".errors.jsonl");
    for (const InputError& e : input->errors)
      errors << Json({{"line", e.line}, {"reason", e.reason}}).dump() << "\n";
  });
  if (!group.is_driver()) {
    group.runner().follow();
    return 0;
  }
  if (log->cut_bytes() > 0)
    std::cerr << "dsmath-worker: " << o.output << ": cut a torn last line (" << log->cut_bytes()
              << " bytes) left by an interrupted run\n";
  if (!input->errors.empty())
    std::cerr << "dsmath-worker: " << input->errors.size() << " input line(s) skipped, see "
              << o.output << ".errors.jsonl\n";
  const Clock::time_point start = Clock::now();
  BatchJob job(o, group.tokenizer(), std::move(*input), std::move(few_shot), *log, errors);
  {
    Engine engine(group.runner(), group.engine_config());
    job.run(engine);
  }
  group.runner().shutdown();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const Json summary =
      job.summary().to_json(seconds, job.samples_this_run(), job.tokens_this_run());
  std::cerr << "dsmath-worker: " << summary["overall"].dump() << "\n";
  if (!o.summary.empty()) {
    std::ofstream out(o.summary);
    out << summary.dump(2) << "\n";
    DSMATH_CHECK(out.good(), "--summary: cannot write ", o.summary);
  }
  return 0;
}

}  // namespace dsmath
