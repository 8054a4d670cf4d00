#include "coordinator/request_plan.h"

#include <gtest/gtest.h>

#include "common/text/prompt.h"
#include "tests/unit/coordinator/served_model_fixture.h"

namespace dsmath {
namespace {

const ServedModel& model() {
  return testing::served_model();
}

std::string repeat(const std::string& s, int times) {
  std::string out;
  for (int i = 0; i < times; ++i) out += s;
  return out;
}

v1::GenerateRequest with_prompt(const std::string& prompt = "What is 2 + 2?") {
  v1::GenerateRequest r;
  r.set_prompt(prompt);
  return r;
}

// The refusal's code and sentence.
RequestError refusal(const v1::GenerateRequest& r, ServerLimits limits = {}) {
  try {
    plan_request(r, model(), limits);
  } catch (const RequestError& e) {
    return e;
  }
  ADD_FAILURE() << "accepted: " << r.ShortDebugString();
  return {grpc::StatusCode::OK, ""};
}

TEST(RequestPlan, UnsetFieldsComeFromGenerationConfigAndTheContext) {
  const RequestPlan plan = plan_request(with_prompt(), model(), {});
  EXPECT_EQ(plan.prompt, model().tokenizer.encode("What is 2 + 2?"));
  EXPECT_EQ(plan.params.temperature, 0.0);  // do_sample false: greedy
  EXPECT_EQ(plan.params.top_p, 1.0);
  EXPECT_EQ(plan.n, 1);
  EXPECT_FALSE(plan.params.logprobs);
  // The default 256 does not fit a 64-token context: what is left of it.
  EXPECT_EQ(plan.params.max_new_tokens, 64 - int64_t(plan.prompt.size()));
  EXPECT_NE(plan_request(with_prompt(), model(), {}).params.seed, plan.params.seed);
}

TEST(RequestPlan, SetFieldsAreKept) {
  v1::GenerateRequest r = with_prompt();
  r.set_temperature(0.7f);
  r.set_top_p(0.9f);
  r.set_top_k(40);
  r.set_seed(7);
  r.set_n(3);
  r.set_max_new_tokens(10);
  r.set_logprobs(2);
  r.add_stop("\n\n");
  r.add_stop_token_ids(13);
  const RequestPlan plan = plan_request(r, model(), {});
  EXPECT_FLOAT_EQ(float(plan.params.temperature), 0.7f);
  EXPECT_FLOAT_EQ(float(plan.params.top_p), 0.9f);
  EXPECT_EQ(plan.params.top_k, 40);
  EXPECT_EQ(plan.params.seed, 7u);
  EXPECT_EQ(plan.n, 3);
  EXPECT_EQ(plan.params.max_new_tokens, 10);
  EXPECT_TRUE(plan.params.logprobs);
  EXPECT_EQ(plan.params.top_logprobs, 2);
  EXPECT_EQ(plan.stop, std::vector<std::string>{"\n\n"});
  EXPECT_EQ(plan.params.stop_token_ids, std::vector<int32_t>{13});
}

TEST(RequestPlan, MessagesUseTheChatTemplateWithChainOfThought) {
  v1::GenerateRequest r;
  v1::ChatMessage* m = r.add_messages();
  m->set_role("user");
  m->set_content("What is 2 + 2?");
  r.set_cot(true);
  EXPECT_EQ(
      plan_request(r, model(), {}).prompt,
      build_chat_prompt(model().tokenizer, {{"user", "What is 2 + 2?"}}, CotLanguage::kEnglish));
}

TEST(RequestPlan, EachBadFieldIsRefusedWithItsName) {
  auto with = [](auto set) {
    v1::GenerateRequest r = with_prompt();
    set(r);
    return r;
  };
  const std::vector<std::pair<v1::GenerateRequest, std::string>> cases = {
      {v1::GenerateRequest(), "the prompt is empty"},
      {with([](auto& r) { r.add_prompt_token_ids(1); }), "set only one of prompt"},
      {with([](auto& r) { r.set_prompt(repeat("7 ", 40)); }), "no room to generate"},
      {with([](auto& r) { r.set_max_new_tokens(60); }), "exceeds the model's context of 64"},
      {with([](auto& r) { r.set_max_new_tokens(0); }), "max_new_tokens must be in [1, 4096]"},
      {with([](auto& r) { r.set_temperature(-0.5f); }), "temperature must be >= 0"},
      {with([](auto& r) { r.set_top_p(0); }), "top_p must be in (0, 1]"},
      {with([](auto& r) { r.set_top_k(-1); }), "top_k must be >= 0"},
      {with([](auto& r) { r.set_min_p(2); }), "min_p must be in [0, 1]"},
      {with([](auto& r) { r.set_n(0); }), "n must be in [1, 64]"},
      {with([](auto& r) { r.set_n(65); }), "n must be in [1, 64]"},
      {with([](auto& r) { r.set_logprobs(21); }), "logprobs must be in [0, 20]"},
      {with([](auto& r) { r.add_stop(""); }), "stop[0] is empty"},
      {with([](auto& r) { r.add_stop_token_ids(102400); }), "stop_token_ids[0] = 102400"},
      {with([](auto& r) { r.set_repetition_penalty(0); }), "repetition_penalty"},
  };
  for (const auto& [request, sentence] : cases) {
    const RequestError e = refusal(request);
    EXPECT_EQ(e.code, grpc::StatusCode::INVALID_ARGUMENT) << sentence;
    EXPECT_NE(e.message.find(sentence), std::string::npos) << e.message;
  }
  v1::GenerateRequest ids;
  ids.add_prompt_token_ids(5);
  ids.add_prompt_token_ids(-3);
  EXPECT_NE(refusal(ids).message.find("prompt_token_ids[1] = -3 is outside the vocabulary"),
            std::string::npos);
  v1::GenerateRequest chat;
  chat.add_messages()->set_role("assistant");
  EXPECT_NE(refusal(chat).message.find("no \"user\" message"), std::string::npos);
}

TEST(RequestPlan, TokenizeRendersLikeGenerate) {
  v1::TokenizeRequest t;
  t.set_text("1+1");
  t.set_cot(true);
  v1::GenerateRequest g = with_prompt("1+1");
  g.set_cot(true);
  EXPECT_EQ(tokenize_request(t, model()), plan_request(g, model(), {}).prompt);
  t.set_add_special_tokens(false);
  EXPECT_EQ(tokenize_request(t, model()).front(), plan_request(g, model(), {}).prompt[1]);
}

}  // namespace
}  // namespace dsmath
