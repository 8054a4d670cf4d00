#include "coordinator/served_request.h"

#include <gtest/gtest.h>

#include "tests/unit/coordinator/served_model_fixture.h"

namespace dsmath {
namespace {

using worker::v1::TokenEvent;

const ServedModel& model() {
  return testing::served_model();
}

RequestPlan plan(int32_t n = 1, std::vector<std::string> stop = {}) {
  RequestPlan p;
  p.request_id = "r1";
  p.prompt = model().tokenizer.encode("Question:");
  p.params.seed = 9;
  p.n = n;
  p.stop = std::move(stop);
  return p;
}

TokenEvent token(int32_t sample, int32_t id, worker::v1::Finish finish = worker::v1::FINISH_NONE) {
  TokenEvent e;
  e.set_key("q0");
  e.set_sample_index(sample);
  e.set_has_token(true);
  e.set_token_id(id);
  e.set_finish(finish);
  return e;
}

ServedRequest::Update apply(ServedRequest& r, std::vector<TokenEvent> events) {
  std::vector<const TokenEvent*> pointers;
  for (const TokenEvent& e : events) pointers.push_back(&e);
  return r.apply(pointers, Clock::now());
}

std::vector<int32_t> ids(const std::string& text) {
  return model().tokenizer.encode(text, false);
}

TEST(ServedRequest, StreamsDeltasThatAddUpToTheUnaryText) {
  ServedRequest streamed(plan(), model(), true, Clock::now());
  ServedRequest unary(plan(), model(), false, Clock::now());
  const std::vector<int32_t> text = ids("The answer is 42.");
  std::string concatenated;
  for (size_t i = 0; i < text.size(); ++i) {
    const auto finish = i + 1 == text.size() ? worker::v1::FINISH_LENGTH : worker::v1::FINISH_NONE;
    const ServedRequest::Update u = apply(streamed, {token(0, text[i], finish)});
    ASSERT_TRUE(u.message.has_value());
    EXPECT_EQ(u.message->seed(), i == 0 ? 9u : 0u);  // on the first message only
    concatenated += u.message->outputs(0).text();
    EXPECT_EQ(u.finished, i + 1 == text.size());
    EXPECT_EQ(u.message->has_usage(), u.finished);
    apply(unary, {token(0, text[i], finish)});
  }
  EXPECT_EQ(concatenated, "The answer is 42.");
  const v1::GenerateResponse r = unary.response(Clock::now());
  EXPECT_EQ(r.outputs(0).text(), concatenated);
  EXPECT_EQ(r.outputs(0).finish_reason(), "length");
  EXPECT_FALSE(r.outputs(0).has_stop_reason());
  EXPECT_EQ(r.usage().completion_tokens(), text.size());
  EXPECT_EQ(r.usage().prompt_tokens(), plan().prompt.size());
  EXPECT_TRUE(streamed.streamed());
  EXPECT_FALSE(unary.streamed());
}

TEST(ServedRequest, AStopStringEndsTheSampleAndAsksTheWorkerToStop) {
  ServedRequest r(plan(2, {"\n\n"}), model(), true, Clock::now());
  const std::vector<int32_t> text = ids("x = 4.\n\nNext");
  std::string out;
  std::vector<int32_t> stops;
  bool finished_sample_0 = false;
  for (int32_t id : text) {
    const ServedRequest::Update u = apply(r, {token(0, id), token(1, id)});
    for (int32_t s : u.stop_samples) stops.push_back(s);
    if (!u.message) continue;
    for (const v1::Output& o : u.message->outputs())
      if (o.index() == 0) {
        out += o.text();
        if (!o.finish_reason().empty()) {
          EXPECT_EQ(o.finish_reason(), "stop");
          EXPECT_EQ(o.stop_reason().stop_string(), "\n\n");
          finished_sample_0 = true;
        }
      }
  }
  EXPECT_TRUE(finished_sample_0);
  EXPECT_EQ(out, "x = 4.");
  EXPECT_EQ(stops, (std::vector<int32_t>{0, 1}));
  // The worker's late events for stopped samples change nothing; the request is done.
  const ServedRequest::Update late = apply(r, {token(0, text[0])});
  EXPECT_FALSE(late.message.has_value());
}

TEST(ServedRequest, FinishReasonsNameWhatStoppedEachSample) {
  ServedRequest r(plan(3), model(), false, Clock::now());
  TokenEvent cancelled;
  cancelled.set_sample_index(2);
  cancelled.set_finish(worker::v1::FINISH_CANCELLED);
  const ServedRequest::Update u =
      apply(r, {token(0, 100001, worker::v1::FINISH_EOS),
                token(1, 13, worker::v1::FINISH_STOP_TOKEN), cancelled});
  EXPECT_TRUE(u.finished);
  EXPECT_TRUE(u.status.ok());
  const v1::GenerateResponse resp = r.response(Clock::now());
  EXPECT_EQ(resp.outputs(0).finish_reason(), "stop");
  EXPECT_EQ(resp.outputs(0).stop_reason().eos_token_id(), 100001);
  EXPECT_EQ(resp.outputs(0).text(), "");  // EOS is special: skipped in the text
  EXPECT_EQ(resp.outputs(1).stop_reason().stop_token_id(), 13);
  EXPECT_EQ(resp.outputs(2).finish_reason(), "cancelled");
}

TEST(ServedRequest, AbortCancelsWhatIsLeftAndRestartForgetsEverything) {
  ServedRequest r(plan(2), model(), true, Clock::now());
  apply(r, {token(0, ids("a")[0], worker::v1::FINISH_LENGTH), token(1, ids("b")[0])});
  const ServedRequest::Update u = r.cancel(Clock::now());
  ASSERT_TRUE(u.message.has_value());
  ASSERT_EQ(u.message->outputs_size(), 1);  // sample 0 had finished already
  EXPECT_EQ(u.message->outputs(0).index(), 1u);
  EXPECT_EQ(u.message->outputs(0).finish_reason(), "cancelled");

  ServedRequest again(plan(), model(), false, Clock::now());
  apply(again, {token(0, ids("a")[0])});
  EXPECT_TRUE(again.started());
  again.restart();
  EXPECT_FALSE(again.started());
  EXPECT_EQ(again.response(Clock::now()).outputs(0).token_ids_size(), 0);
}

TEST(ServedRequest, WorkerErrorsAndNonsense) {
  ServedRequest r(plan(), model(), false, Clock::now());
  TokenEvent refused;
  refused.set_sample_index(-1);
  refused.set_finish(worker::v1::FINISH_ERROR);
  refused.set_error("request 'q0': the prompt has no tokens");
  ServedRequest::Update u = apply(r, {refused});
  EXPECT_TRUE(u.finished);
  EXPECT_EQ(u.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  ServedRequest s(plan(), model(), false, Clock::now());
  EXPECT_THROW(apply(s, {token(1, 5)}), RequestError);        // no sample 1
  EXPECT_THROW(apply(s, {token(0, 1 << 20)}), RequestError);  // outside the vocabulary
  TokenEvent nan;
  nan.set_sample_index(0);
  nan.set_finish(worker::v1::FINISH_ERROR);
  nan.set_error("logits are not finite");
  u = apply(s, {nan});
  EXPECT_EQ(u.status.error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_NE(u.status.error_message().find("sample 0 failed on the worker"), std::string::npos);
}

}  // namespace
}  // namespace dsmath
