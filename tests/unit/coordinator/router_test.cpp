// The router with fake calls and fake group links: admission refusals, routing to the least
// loaded group, events turned into responses, a malformed step, a lost group's requests.
#include "coordinator/router.h"

#include <gtest/gtest.h>

#include "tests/unit/coordinator/served_model_fixture.h"
#include "worker/serve/link_codec.h"

namespace dsmath {
namespace {

struct FakeSink : ResponseSink {
  void push(v1::GenerateStreamResponse m) override { messages.push_back(std::move(m)); }
  void complete(grpc::Status s, v1::GenerateResponse r) override {
    status = s;
    response = std::move(r);
    done = true;
  }
  void flush() override {}
  std::vector<v1::GenerateStreamResponse> messages;
  v1::GenerateResponse response;
  grpc::Status status;
  bool done = false;
};

struct FakeLink : GroupLink {
  void send(worker::v1::CoordinatorMessage m) override { sent.push_back(std::move(m)); }
  void close(grpc::Status s) override { closed = s; }
  void flush() override {}
  std::vector<std::string> work_keys() const {
    std::vector<std::string> keys;
    for (const auto& m : sent)
      for (const auto& item : m.work().items()) keys.push_back(item.key());
    return keys;
  }
  std::vector<worker::v1::CoordinatorMessage> sent;
  std::optional<grpc::Status> closed;
};

worker::v1::Register registration() {
  return testing::group_registration(/*kv_blocks=*/100, /*max_running=*/8);
}

RequestPlan plan(const std::string& id = "", int32_t n = 1) {
  RequestPlan p;
  p.request_id = id;
  p.prompt = {100000, 5, 6};
  p.params.max_new_tokens = 4;
  p.n = n;
  return p;
}

worker::v1::WorkerMessage events(const std::string& key,
                                 std::vector<std::pair<int32_t, int32_t>> tokens,
                                 worker::v1::Finish finish = worker::v1::FINISH_NONE) {
  worker::v1::WorkerMessage m;
  for (auto [sample, token] : tokens) {
    worker::v1::TokenEvent* e = m.mutable_events()->add_events();
    e->set_key(key);
    e->set_sample_index(sample);
    e->set_has_token(true);
    e->set_token_id(token);
    e->set_finish(finish);
  }
  return m;
}

class RouterTest : public ::testing::Test {
 protected:
  std::string join(std::shared_ptr<FakeLink> link) {
    std::string id;
    EXPECT_TRUE(router.add_group(link, registration(), &id).ok());
    return id;
  }
  std::string submit(std::shared_ptr<FakeSink> sink, RequestPlan p = plan(),
                     bool streaming = true) {
    std::string key;
    const grpc::Status s = router.submit(std::move(p), streaming, sink, &key);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return key;
  }

  Metrics metrics;
  ServerLimits limits{.max_queue = 2};
  Router router{testing::served_model(), limits, RouterOptions{}, metrics};
};

TEST_F(RouterTest, RefusesWithoutGroupsAndWrongModels) {
  std::string key;
  EXPECT_EQ(router.submit(plan(), true, std::make_shared<FakeSink>(), &key).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  worker::v1::Register wrong = registration();
  wrong.set_fingerprint("0000000000000000");
  std::string id;
  const grpc::Status s = router.add_group(std::make_shared<FakeLink>(), wrong, &id);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(s.error_message().find("is not the one this coordinator serves"), std::string::npos);
  wrong = registration();
  wrong.set_protocol_version(kWorkerLinkVersion + 1);
  EXPECT_EQ(router.add_group(std::make_shared<FakeLink>(), wrong, &id).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_FALSE(router.serving());
}

TEST_F(RouterTest, RoutesToTheLeastLoadedGroupAndStreamsEvents) {
  auto a = std::make_shared<FakeLink>(), b = std::make_shared<FakeLink>();
  join(a);
  join(b);
  EXPECT_TRUE(router.serving());
  auto s1 = std::make_shared<FakeSink>(), s2 = std::make_shared<FakeSink>();
  const std::string k1 = submit(s1, plan("one", 2));
  const std::string k2 = submit(s2, plan("two"));
  EXPECT_EQ(a->work_keys(), std::vector<std::string>{k1});  // then b has less work
  EXPECT_EQ(b->work_keys(), std::vector<std::string>{k2});

  std::string dup_key;
  EXPECT_EQ(router.submit(plan("one"), true, std::make_shared<FakeSink>(), &dup_key).error_code(),
            grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(router.submit(plan(), true, std::make_shared<FakeSink>(), &dup_key).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);  // --max-queue 2: both wait for a token

  ASSERT_TRUE(router.on_message("g1", events(k1, {{0, 11}, {1, 12}})).ok());
  ASSERT_EQ(s1->messages.size(), 1u);
  EXPECT_EQ(s1->messages[0].outputs_size(), 2);  // one message per request per step
  ASSERT_TRUE(
      router.on_message("g1", events(k1, {{0, 13}, {1, 14}}, worker::v1::FINISH_LENGTH)).ok());
  EXPECT_TRUE(s1->done);
  EXPECT_TRUE(s1->status.ok());
  EXPECT_EQ(s1->messages.back().usage().completion_tokens(), 4u);
  // Events of a request that is over, or of another group's request, are ignored.
  EXPECT_TRUE(router.on_message("g1", events(k1, {{0, 15}})).ok());
  EXPECT_TRUE(router.on_message("g1", events(k2, {{0, 15}})).ok());
  EXPECT_TRUE(s2->messages.empty());
  EXPECT_EQ(router.snapshot().live_requests, 1);
}

TEST_F(RouterTest, AMalformedStepIsAnErrorForTheGroupNotTheServer) {
  auto a = std::make_shared<FakeLink>();
  join(a);
  const std::string key = submit(std::make_shared<FakeSink>());
  const grpc::Status s = router.on_message("g1", events(key, {{7, 11}}));  // n = 1
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("malformed"), std::string::npos);
}

TEST_F(RouterTest, ALostGroupsUnstartedRequestsMoveAndStartedOnesFail) {
  auto a = std::make_shared<FakeLink>(), b = std::make_shared<FakeLink>();
  join(a);
  auto started = std::make_shared<FakeSink>(), waiting = std::make_shared<FakeSink>(),
       unary = std::make_shared<FakeSink>();
  const std::string k1 = submit(started);
  ASSERT_TRUE(router.on_message("g1", events(k1, {{0, 11}})).ok());  // streamed a token
  const std::string k2 = submit(waiting);
  join(b);
  router.remove_group("g1", "test");
  EXPECT_TRUE(started->done);
  EXPECT_EQ(started->status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(started->status.error_message().find("after the request had started streaming"),
            std::string::npos);
  EXPECT_FALSE(waiting->done);
  EXPECT_EQ(b->work_keys(), std::vector<std::string>{k2});
  ASSERT_TRUE(a->closed.has_value());
  // Unary requests never streamed: they move even after tokens came back.
  const std::string k3 = submit(unary, plan(), /*streaming=*/false);
  ASSERT_TRUE(router.on_message("g2", events(k3, {{0, 11}})).ok());
  auto c = std::make_shared<FakeLink>();
  join(c);
  router.remove_group("g2", "test");
  EXPECT_FALSE(unary->done);
  EXPECT_EQ(c->work_keys(), (std::vector<std::string>{k2, k3}));
  ASSERT_TRUE(router.on_message("g3", events(k3, {{0, 21}}, worker::v1::FINISH_LENGTH)).ok());
  ASSERT_TRUE(unary->done);
  EXPECT_EQ(unary->response.outputs(0).token_ids_size(), 1);  // only the re-run's token
}

TEST_F(RouterTest, AbortAndClientGoneCancelOnTheWorker) {
  auto a = std::make_shared<FakeLink>();
  join(a);
  auto s1 = std::make_shared<FakeSink>(), s2 = std::make_shared<FakeSink>();
  const std::string k1 = submit(s1, plan("x"));
  const std::string k2 = submit(s2);
  EXPECT_TRUE(router.abort("x"));
  EXPECT_FALSE(router.abort("x"));
  EXPECT_TRUE(s1->status.ok());
  EXPECT_EQ(s1->messages.back().outputs(0).finish_reason(), "cancelled");
  router.client_gone(k2, {grpc::StatusCode::CANCELLED, "gone"});
  EXPECT_EQ(s2->status.error_code(), grpc::StatusCode::CANCELLED);
  std::vector<std::string> cancelled;
  for (const auto& m : a->sent)
    for (const auto& k : m.cancel().keys()) cancelled.push_back(k);
  EXPECT_EQ(cancelled, (std::vector<std::string>{k1, k2}));
  EXPECT_EQ(router.snapshot().live_requests, 0);
}

}  // namespace
}  // namespace dsmath
