#include "worker/model/step_plan.h"

#include <gtest/gtest.h>

#include "common/core/error.h"
#include "worker/model/tp_layout.h"

namespace dsmath {
namespace {

TEST(StepPlan, RoundTrips) {
  StepPlan p;
  p.all_logits = true;
  p.copies = {{3, 7}, {1, 2}};
  p.sequences.push_back({{100000, 5, 6}, 0, {4}});
  p.sequences.push_back({{9}, 17, {0, 8}});
  p.sampling = {2, -5, 1 << 30};
  const StepPlan q = StepPlan::deserialize(p.serialize());
  EXPECT_EQ(q.sampling, p.sampling);
  EXPECT_TRUE(q.all_logits);
  EXPECT_FALSE(q.shutdown);
  ASSERT_EQ(q.copies.size(), 2u);
  EXPECT_EQ(q.copies[1].src, 1);
  EXPECT_EQ(q.copies[1].dst, 2);
  ASSERT_EQ(q.sequences.size(), 2u);
  EXPECT_EQ(q.sequences[0].tokens, (std::vector<int32_t>{100000, 5, 6}));
  EXPECT_EQ(q.sequences[1].first_position, 17);
  EXPECT_EQ(q.sequences[1].block_table, (std::vector<int32_t>{0, 8}));
}

TEST(StepPlan, RejectsMalformedWords) {
  StepPlan p;
  p.sequences.push_back({{1, 2}, 0, {0}});
  std::vector<int32_t> w = p.serialize();
  EXPECT_THROW(StepPlan::deserialize(std::span(w).first(w.size() - 1)), Error);
  w.push_back(0);
  EXPECT_THROW(StepPlan::deserialize(w), Error);
  std::vector<int32_t> bad{0, -1};
  EXPECT_THROW(StepPlan::deserialize(bad), Error);
}

ModelConfig config(int64_t heads, int64_t kv_heads) {
  ModelConfig c;
  c.vocab_size = 1024;
  c.hidden_size = 64;
  c.intermediate_size = 176;
  c.num_hidden_layers = 2;
  c.num_attention_heads = heads;
  c.num_key_value_heads = kv_heads;
  c.head_dim = 64 / heads;
  return c;
}

TEST(TpLayout, SplitsHeadsIntermediateAndVocab) {
  const TpLayout t = TpLayout::make(config(8, 8), 4, 3);
  EXPECT_EQ(t.local_heads, 2);
  EXPECT_EQ(t.local_kv_heads, 2);
  EXPECT_EQ(t.kv_head_begin, 6);
  EXPECT_EQ(t.local_intermediate, 44);
  EXPECT_EQ(t.local_vocab, 256);
  EXPECT_EQ(t.vocab_begin, 768);
}

TEST(TpLayout, ReplicatesKvHeadsWhenTpExceedsThem) {
  // 8 query heads, 2 KV heads (groups of 4), tp 4: ranks 0-1 read KV head 0, ranks 2-3 head 1.
  for (int64_t rank = 0; rank < 4; ++rank) {
    const TpLayout t = TpLayout::make(config(8, 2), 4, rank);
    EXPECT_EQ(t.local_heads, 2);
    EXPECT_EQ(t.local_kv_heads, 1);
    EXPECT_EQ(t.kv_head_begin, rank / 2);
  }
}

TEST(TpLayout, BadTpNamesTheField) {
  try {
    TpLayout::make(config(4, 4), 3, 0);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("num_attention_heads"), std::string::npos) << e.what();
  }
  ModelConfig c = config(4, 4);
  c.intermediate_size = 170;  // not a multiple of 4
  EXPECT_THROW(TpLayout::make(c, 4, 0), Error);
}

}  // namespace
}  // namespace dsmath
