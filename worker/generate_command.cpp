#include "worker/generate_command.h"

#include <deque>
#include <iostream>
#include <unordered_map>

#include "common/core/error.h"
#include "common/text/prompt.h"
#include "common/text/text_stream.h"
#include "worker/engine/engine.h"
#include "worker/model_group.h"

namespace dsmath {
namespace {

struct SampleOutput {
  explicit SampleOutput(TextStream text) : text(std::move(text)) {}
  TextStream text;
  std::vector<int32_t> token_ids;
  std::vector<float> logprobs;
  std::vector<std::vector<TokenLogprob>> top_logprobs;
  FinishReason finish = FinishReason::kNone;
  std::string error;
  int32_t prompt_tokens = 0, cached_prompt_tokens = 0;
};

// One prompt line in flight: its samples fill in as the engine's events arrive.
struct LineState {
  PromptLine line;
  size_t ordinal = 0;  // among the prompts
  std::vector<SampleOutput> samples;
  int32_t unfinished = 0;
};

// OpenAI's finish_reason ("stop" covers EOS, stop tokens and stop strings) and what stopped it.
nlohmann::json to_json(const LineState& l, const SampleOutput& s, size_t index, bool logprobs) {
  const bool by_string = s.text.stopped();
  const char* reason = by_string                           ? "stop"
                       : s.finish == FinishReason::kLength ? "length"
                       : s.finish == FinishReason::kError  ? "error"
                                                           : "stop";
  nlohmann::json j = {{"text", s.text.text()},
                      {"token_ids", s.token_ids},
                      {"finish_reason", reason},
                      {"prompt_tokens", s.prompt_tokens},
                      {"cached_prompt_tokens", s.cached_prompt_tokens},
                      {"completion_tokens", s.token_ids.size()}};
  if (by_string) {
    j["stop_reason"] = s.text.matched_stop();
  } else if ((s.finish == FinishReason::kEos || s.finish == FinishReason::kStopToken) &&
             !s.token_ids.empty()) {
    j["stop_reason"] = s.token_ids.back();
  }
  if (s.finish == FinishReason::kError) j["error"] = s.error;
  if (!l.line.id.is_null()) j["id"] = l.line.id;
  if (l.samples.size() > 1) {
    j["prompt_index"] = l.ordinal;
    j["sample_index"] = index;
  }
  if (logprobs) j["logprobs"] = s.logprobs;
  if (!s.top_logprobs.empty()) {
    nlohmann::json tops = nlohmann::json::array();
    for (const auto& step : s.top_logprobs) {
      nlohmann::json alts = nlohmann::json::array();
      for (const TokenLogprob& t : step)
        alts.push_back({{"token_id", t.token}, {"logprob", t.logprob}});
      tops.push_back(alts);
    }
    j["top_logprobs"] = tops;
  }
  return j;
}

// Rank 0: feeds the lines to the engine (a bounded window at a time), turns events into text
// and prints each line once it and all before it are done. Returns the number of samples that
// ended with an error.
int64_t drive(Engine& engine, const Tokenizer& tokenizer, const PromptFormat& format,
              std::vector<PromptLine> lines, const GenerateOptions& o) {
  const size_t window = size_t(std::max(64, 2 * engine.config().max_running));
  std::deque<LineState> in_flight;  // input order; the front prints first
  std::unordered_map<std::string, LineState*> by_key;
  size_t next = 0;
  int64_t errors = 0;
  const bool json = o.format == "json";
  const bool logprobs = o.defaults.params.logprobs;

  while (next < lines.size() || !in_flight.empty()) {
    while (next < lines.size() && in_flight.size() < window) {
      PromptLine& line = lines[next++];
      LineState& state = in_flight.emplace_back();
      state.ordinal = next - 1;
      for (int32_t i = 0; i < line.n; ++i)
        state.samples.emplace_back(TextStream(tokenizer, line.stop));
      state.unfinished = line.n;
      EngineRequest r;
      r.key = line.key;
      r.prompt = build_prompt(tokenizer, line.prompt, format);
      r.params = line.params;
      r.n = line.n;
      state.line = std::move(line);
      by_key[state.line.key] = &state;
      engine.add(std::move(r));
    }

    for (EngineEvent& e : engine.step()) {
      LineState& state = *by_key.at(e.key);
      if (e.sample_index < 0) {  // refused as a whole
        for (SampleOutput& s : state.samples) {
          s.finish = FinishReason::kError;
          s.error = e.error;
        }
        errors += state.unfinished;
        state.unfinished = 0;
        continue;
      }
      SampleOutput& s = state.samples[size_t(e.sample_index)];
      if (e.token) {
        s.token_ids.push_back(e.token->token);
        s.logprobs.push_back(e.token->logprob);
        if (!e.token->top.empty()) s.top_logprobs.push_back(std::move(e.token->top));
        s.text.push(e.token->token);
        if (s.text.stopped() && e.finish == FinishReason::kNone) engine.stop(e.key, e.sample_index);
      }
      if (e.finish == FinishReason::kNone) continue;
      s.text.finish();
      s.finish = e.finish;
      s.error = e.error;
      s.prompt_tokens = e.prompt_tokens;
      s.cached_prompt_tokens = e.cached_prompt_tokens;
      errors += e.finish == FinishReason::kError;
      --state.unfinished;
    }

    while (!in_flight.empty() && in_flight.front().unfinished == 0) {
      const LineState& done = in_flight.front();
      for (size_t i = 0; i < done.samples.size(); ++i) {
        const SampleOutput& s = done.samples[i];
        if (json) {
          std::cout << to_json(done, s, i, logprobs).dump() << "\n";
        } else {
          std::cout << s.text.text() << "\n";
          if (s.finish == FinishReason::kError) std::cerr << "dsmath-worker: " << s.error << "\n";
        }
      }
      std::cout.flush();
      by_key.erase(done.line.key);
      in_flight.pop_front();
    }
  }
  return errors;
}

}  // namespace

int run_generate(const GenerateOptions& o, Communicator& comm) {
  std::vector<PromptLine> lines;
  ModelGroup group(o.group, comm, [&](const Tokenizer&) {
    DSMATH_CHECK(o.prompt.empty() != o.prompts_file.empty(),
                 "generate: give exactly one of --prompt and --prompts-file");
    if (o.prompts_file.empty()) {
      PromptLine line = o.defaults;
      line.key = "1";  // as line 1 of a file
      line.prompt = o.prompt;
      line.validate();
      lines.push_back(std::move(line));
    } else {
      lines = read_prompts_file(o.prompts_file, o.defaults);
    }
  });
  if (!group.is_driver()) {
    group.runner().follow();
    return 0;
  }
  PromptFormat format;
  format.chat = o.chat;
  format.cot = o.cot.empty()   ? CotLanguage::kNone
               : o.cot == "zh" ? CotLanguage::kChinese
                               : CotLanguage::kEnglish;
  int64_t errors = 0;
  {
    Engine engine(group.runner(), group.engine_config());
    errors = drive(engine, group.tokenizer(), format, std::move(lines), o);
  }
  group.runner().shutdown();
  if (errors > 0) {
    std::cerr << "dsmath-worker: error: " << errors << " sample(s) ended with an error\n";
    return 1;
  }
  return 0;
}

}  // namespace dsmath
