#include "common/jobs/batch_job.h"

#include <iostream>

#include "common/checkpoint/fingerprint.h"
#include "common/core/error.h"
#include "common/jobs/answer.h"
#include "common/text/prompt.h"

namespace dsmath {
namespace {

using Json = nlohmann::json;

std::optional<FewShotTemplate> load_template(const std::string& path) {
  if (path.empty()) return std::nullopt;
  return FewShotTemplate::load(path);
}

// The settings that decide the samples: a resumed job must run with the same ones.
Json settings_of(const JobSpec& o, const std::optional<FewShotTemplate>& few_shot) {
  const JobSampling& p = o.sampling;
  return {{"model_fingerprint", model_fingerprint(o.model_dir)},
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

JobInput checked_input(const JobSpec& o, const std::optional<FewShotTemplate>& few_shot) {
  DSMATH_CHECK(o.n >= 1, "--n must be at least 1, got ", o.n);
  DSMATH_CHECK(o.output_format == "native" || o.output_format == "openai",
               "--output-format must be native or openai, got ", o.output_format);
  JobInput input = read_job_input(o.input, o.fields);
  check_job_settings(o.output, settings_of(o, few_shot));
  return input;
}

}  // namespace

BatchJob::BatchJob(const JobSpec& spec, const Tokenizer& tokenizer)
    : spec_(spec),
      tokenizer_(tokenizer),
      few_shot_(load_template(spec.template_file)),
      input_(checked_input(spec, few_shot_)),
      log_(spec.output),
      errors_(spec.output + ".errors.jsonl", std::ios::trunc),
      summary_(spec.n),
      progress_("batch") {
  DSMATH_CHECK(errors_, "cannot write ", spec.output, ".errors.jsonl");
  for (const InputError& e : input_.errors)
    errors_ << Json({{"line", e.line}, {"reason", e.reason}}).dump() << "\n";
  errors_.flush();
  if (!errors_) fail_storage("cannot write ", spec.output, ".errors.jsonl (disk full?)");
  count_existing();
}

// Samples already in the output count as done, and into the summary (graded again, so that a
// summary after a resume covers every sample).
void BatchJob::count_existing() {
  std::unordered_map<std::string, const JobProblem*> by_id;
  for (const JobProblem& p : input_.problems) {
    by_id[p.id] = &p;
    counts_.samples_total += n_of(p);
    unfinished_of_problem_[p.id] = n_of(p);
  }
  counts_.problems_total = int64_t(input_.problems.size());
  for (const Json& line : log_.existing()) {
    const auto [id, index] = SampleLog::key_of(line);
    auto it = by_id.find(id);
    // From another input, or beyond this problem's n: kept in the file, not counted.
    if (it == by_id.end() || index >= n_of(*it->second)) continue;
    const Json* text = nullptr;  // native "text", or the OpenAI choice's
    int64_t tokens = 0;
    if (line.contains("text")) {
      text = &line.at("text");
      tokens = line.value("completion_tokens", int64_t(0));
    } else {
      const Json& body = line.at("response").at("body");
      const Json& choice = body.at("choices").at(0);
      text = choice.contains("text") ? &choice.at("text") : &choice.at("message").at("content");
      tokens = body.at("usage").value("completion_tokens", int64_t(0));
    }
    GradedSample g{id, index, extract_answer(text->get<std::string>()), std::nullopt, tokens};
    if (it->second->reference)
      g.correct = g.answer && answers_equal(*g.answer, *it->second->reference);
    summary_.add(g);
    ++counts_.samples_done;
    if (--unfinished_of_problem_[id] == 0) ++counts_.problems_done;
  }
}

std::vector<SampleRun> BatchJob::remaining(int64_t max_run) const {
  std::vector<SampleRun> runs;
  for (const JobProblem& p : input_.problems)
    for (int64_t k = 0; k < n_of(p); ++k) {
      if (log_.done(p.id, k)) continue;
      SampleRun* last = runs.empty() ? nullptr : &runs.back();
      if (last && last->problem == &p && last->first + last->count == k && last->count < max_run)
        ++last->count;
      else
        runs.push_back({&p, k, 1});
    }
  return runs;
}

std::vector<int32_t> BatchJob::prompt_of(const JobProblem& p) const {
  const CotLanguage cot = spec_.cot.empty()   ? CotLanguage::kNone
                          : spec_.cot == "zh" ? CotLanguage::kChinese
                                              : CotLanguage::kEnglish;
  if (!p.messages.empty()) return build_chat_prompt(tokenizer_, p.messages, cot);
  if (p.openai) return tokenizer_.encode(p.prompt, true);  // /v1/completions: as it is
  if (few_shot_) return tokenizer_.encode(few_shot_->render(p.prompt), true);
  return build_prompt(tokenizer_, p.prompt, {spec_.chat, cot});
}

JobSampling BatchJob::sampling_of(const JobProblem& p) const {
  JobSampling s = spec_.sampling;
  if (p.max_tokens) s.max_new_tokens = *p.max_tokens;
  if (p.temperature) s.temperature = *p.temperature;
  if (p.top_p) s.top_p = *p.top_p;
  if (p.seed) s.seed = *p.seed;
  return s;
}

std::vector<std::string> BatchJob::stop_of(const JobProblem& p) const {
  std::vector<std::string> stop = spec_.stop;
  if (few_shot_ && !p.openai)
    stop.insert(stop.end(), few_shot_->stop.begin(), few_shot_->stop.end());
  stop.insert(stop.end(), p.stop.begin(), p.stop.end());
  return stop;
}

Json BatchJob::line_of(const SampleRun& run, int64_t i, const FinishedSample& s,
                       const std::optional<std::string>& answer,
                       std::optional<bool> correct) const {
  const JobProblem& p = *run.problem;
  const int64_t index = run.first + i;
  if (spec_.output_format == "openai") {
    Json choice = {{"index", index}, {"finish_reason", s.finish_reason}, {"logprobs", nullptr}};
    if (p.chat_endpoint)
      choice["message"] = {{"role", "assistant"}, {"content", s.text}};
    else
      choice["text"] = s.text;
    return {{"id", cat("batch_req_", p.id, "_", index)},
            {"custom_id", p.id},
            {"response",
             {{"status_code", 200},
              {"body",
               {{"object", p.chat_endpoint ? "chat.completion" : "text_completion"},
                {"choices", Json::array({choice})},
                {"usage",
                 {{"prompt_tokens", s.prompt_tokens},
                  {"completion_tokens", s.completion_tokens},
                  {"total_tokens", s.prompt_tokens + s.completion_tokens}}}}}}},
            {"error", s.error.empty() ? Json(nullptr) : Json({{"message", s.error}})}};
  }
  Json j = {{"id", p.id},
            {"sample_index", index},
            {"text", s.text},
            {"finish_reason", s.finish_reason},
            {"prompt_tokens", s.prompt_tokens},
            {"completion_tokens", s.completion_tokens},
            {"cumulative_logprob", s.cumulative_logprob},
            {"extracted_answer", answer ? Json(*answer) : Json(nullptr)}};
  if (!s.stop_string.empty()) j["stop_reason"] = s.stop_string;
  if (p.reference) {
    j["reference_answer"] = *p.reference;
    j["correct"] = correct.value_or(false);
  }
  if (!s.error.empty()) j["error"] = s.error;
  return j;
}

void BatchJob::finished(const SampleRun& run, int64_t i, const FinishedSample& s) {
  const JobProblem& p = *run.problem;
  const std::optional<std::string> answer = extract_answer(s.text);
  std::optional<bool> correct;
  if (p.reference) correct = answer && answers_equal(*answer, *p.reference);
  log_.append(line_of(run, i, s, answer, correct));
  summary_.add({p.id, run.first + i, answer, correct, s.completion_tokens});
  ++samples_this_run_;
  ++counts_.samples_done;
  if (--unfinished_of_problem_[p.id] == 0) ++counts_.problems_done;
}

void BatchJob::refused(const SampleRun& run, const std::string& reason) {
  const JobProblem& p = *run.problem;
  errors_ << Json({{"line", p.line},
                   {"id", p.id},
                   {"samples", {run.first, run.first + run.count}},
                   {"reason", reason}})
                 .dump()
          << std::endl;
  if (!errors_) fail_storage("cannot write ", spec_.output, ".errors.jsonl (disk full?)");
  std::cerr << "dsmath: problem \"" << p.id << "\" (line " << p.line << "): " << reason << "\n";
  counts_.samples_total -= run.count;
}

void BatchJob::tick() {
  log_.sync_if_due();
  progress_.update(counts_);
}

Json BatchJob::finish(double seconds) {
  log_.sync();
  progress_.update(counts_, /*final=*/true);
  Json summary = summary_.to_json(seconds, samples_this_run_, counts_.tokens);
  if (!spec_.summary.empty()) {
    std::ofstream out(spec_.summary);
    out << summary.dump(2) << "\n";
    out.flush();
    if (!out.good()) fail_storage("--summary: cannot write ", spec_.summary, " (disk full?)");
  }
  return summary;
}

}  // namespace dsmath
