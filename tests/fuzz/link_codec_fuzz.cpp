// Fuzz target: decoding worker-link messages (proto/worker.proto) on both ends, as
// worker/serve/link_codec.* and the coordinator do. The first input byte picks the direction
// (bit 0) and, coordinator side, streaming or unary (bit 1); the rest is the serialized message.
//   worker side: a CoordinatorMessage; each WorkItem's Sampling goes through from_proto and
//     SamplingParams::validate (what Engine::add does with it).
//   coordinator side: a WorkerMessage; each TokenEvent's finish through from_proto, and the
//     events fed to a ServedRequest (n = 3, stop strings, logprobs; the DeepSeekMath-like
//     tokenizer of tests/data) as the router does, one step per run of events with the same key.
// Checks, besides no crash and no ASan/UBSan report:
//   - from_proto and to_proto are inverse: Sampling round-trips field for field (bit for bit,
//     NaN included), and every known Finish value round-trips;
//   - validate() refuses with dsmath::Error only;
//   - nonsense from a worker (sample index or token id out of range) is a RequestError, never
//     another exception; what goes to the client is valid UTF-8 (text, token strings, stop
//     strings), and the streamed deltas add up to the unary response (text and token ids).
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <google/protobuf/stubs/logging.h>

#include "common/tokenizer/tokenizer.h"
#include "common/tokenizer/unicode.h"
#include "coordinator/served_request.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/test_data.h"
#include "worker/serve/link_codec.h"

namespace {

using dsmath::unicode::is_valid_utf8;

const dsmath::ServedModel& served_model() {
  static const dsmath::ServedModel model = [] {
    dsmath::ModelConfig config;
    config.vocab_size = 102400;
    config.max_position_embeddings = 64;
    return dsmath::ServedModel{
        "fuzz",
        "",
        config,
        {},
        dsmath::Tokenizer::load(dsmath::fuzz::test_data() / "tokenizers" / "deepseek_math_like"),
        {100001},
        ""};
  }();
  return model;
}

void worker_side(const dsmath::worker::v1::CoordinatorMessage& m) {
  if (!m.has_work()) return;
  for (const dsmath::worker::v1::WorkItem& item : m.work().items()) {
    dsmath::worker::v1::Sampling sent = item.sampling();
    sent.DiscardUnknownFields();
    const dsmath::SamplingParams params = dsmath::from_proto(sent);
    FUZZ_CHECK(dsmath::to_proto(params).SerializeAsString() == sent.SerializeAsString(),
               "Sampling does not round-trip through SamplingParams");
    try {
      params.validate();
    } catch (const dsmath::Error&) {
    }
  }
}

void check_output(const dsmath::v1::Output& o) {
  FUZZ_CHECK(is_valid_utf8(o.text()), "output text is not valid UTF-8");
  FUZZ_CHECK(is_valid_utf8(o.finish_reason()), "finish reason is not valid UTF-8");
  FUZZ_CHECK(is_valid_utf8(o.stop_reason().stop_string()), "stop string is not valid UTF-8");
  for (const dsmath::v1::LogprobEntry& entry : o.logprobs())
    for (const dsmath::v1::TokenLogprob& top : entry.top())
      FUZZ_CHECK(is_valid_utf8(top.token()), "a top token's text is not valid UTF-8");
}

void coordinator_side(const dsmath::worker::v1::WorkerMessage& m, bool streaming) {
  namespace w = dsmath::worker::v1;
  if (!m.has_events()) return;
  for (const w::TokenEvent& e : m.events().events()) {
    const dsmath::FinishReason reason = dsmath::from_proto(e.finish());
    if (w::Finish_IsValid(e.finish()))
      FUZZ_CHECK(dsmath::to_proto(reason) == e.finish(), "Finish ", int(e.finish()),
                 " does not round-trip");
  }

  const dsmath::ServedModel& model = served_model();
  dsmath::RequestPlan plan;
  plan.request_id = "fuzz";
  plan.prompt = {100000, 5, 6};
  plan.params.logprobs = true;
  plan.params.top_logprobs = 2;
  plan.n = 3;
  plan.stop = {"\n\n", "42"};
  const auto start = std::chrono::steady_clock::now();
  dsmath::ServedRequest request(plan, model, streaming, start);
  std::vector<std::string> text(size_t(plan.n));
  std::vector<std::vector<int32_t>> ids(size_t(plan.n));
  const auto& events = m.events().events();
  bool finished = false;
  for (int begin = 0; begin < events.size() && !finished;) {
    int end = begin + 1;
    while (end < events.size() && events[end].key() == events[begin].key()) ++end;
    std::vector<const w::TokenEvent*> step;
    for (int i = begin; i < end; ++i) step.push_back(&events[i]);
    begin = end;
    dsmath::ServedRequest::Update u;
    try {
      u = request.apply(step, start);
    } catch (const dsmath::RequestError& e) {
      FUZZ_CHECK(!e.message.empty(), "a RequestError without a message");
      return;  // the router drops the group
    }
    if (u.message) {
      FUZZ_CHECK(streaming, "a unary request produced a stream message");
      for (const dsmath::v1::Output& o : u.message->outputs()) {
        check_output(o);
        FUZZ_CHECK(o.index() < uint32_t(plan.n), "a delta for output ", o.index());
        text[o.index()] += o.text();
        ids[o.index()].insert(ids[o.index()].end(), o.token_ids().begin(), o.token_ids().end());
      }
    }
    finished = u.finished;
    if (finished && !u.status.ok()) return;  // the request failed: no response to compare
  }
  const dsmath::v1::GenerateResponse response = request.response(start);
  FUZZ_CHECK(response.outputs_size() == plan.n, "the response has ", response.outputs_size(),
             " outputs");
  for (const dsmath::v1::Output& o : response.outputs()) {
    check_output(o);
    for (int32_t id : o.token_ids())
      FUZZ_CHECK(id >= 0 && id < model.config.vocab_size, "token id ", id, " reached a client");
    if (streaming) {
      FUZZ_CHECK(text[o.index()] == o.text(), "streamed text of output ", o.index(),
                 " differs from the unary text");
      FUZZ_CHECK(std::vector<int32_t>(o.token_ids().begin(), o.token_ids().end()) == ids[o.index()],
                 "streamed token ids of output ", o.index(), " differ");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // A string field holding invalid UTF-8 fails the parse, as it should, with a log line each time.
  static const bool quiet = (google::protobuf::SetLogHandler(nullptr), true);
  (void)quiet;
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  if (mode & 1) {
    dsmath::worker::v1::WorkerMessage m;
    if (m.ParseFromArray(data + 1, int(size - 1))) coordinator_side(m, mode & 2);
  } else {
    dsmath::worker::v1::CoordinatorMessage m;
    if (m.ParseFromArray(data + 1, int(size - 1))) worker_side(m);
  }
  return 0;
}
