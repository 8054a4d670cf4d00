// Scheduler decisions on hand-made sequences (no model): decodes before prompt chunks, the step
// budget, chunked prefill, admission only when a whole prompt's blocks are free, preemption
// of the newest running sequence when a decode finds no block, micro-batches in flight, and
// sequences that the engine runs ahead of their step (overlap).
#include "worker/engine/scheduler.h"

#include <gtest/gtest.h>

#include <memory>

#include "common/core/error.h"

namespace dsmath {
namespace {

struct Fixture {
  explicit Fixture(int32_t blocks, SchedulerConfig config = {16, 8})
      : manager(blocks, 4), scheduler(manager, config) {}

  Sequence* add(int32_t prompt_len, bool enqueue = true) {
    auto r = std::make_shared<Request>();
    r->prompt_len = prompt_len;
    auto s = std::make_unique<Sequence>();
    s->request = r;
    s->arrival = sequences.size();
    s->tokens.assign(size_t(prompt_len), 7);
    if (enqueue) scheduler.enqueue(s.get());
    sequences.push_back(std::move(s));
    return sequences.back().get();
  }
  // What the engine does after the forward: the chunks are computed; finished prompts sample.
  void run(const ScheduledStep& step) {
    for (const ScheduledChunk& c : step.chunks) {
      c.sequence->computed += c.tokens;
      if (c.sequence->pending() == 0) c.sequence->tokens.push_back(1);
    }
  }
  BlockManager manager;
  Scheduler scheduler;
  std::vector<std::unique_ptr<Sequence>> sequences;
};

TEST(Scheduler, LongPromptIsChunkedAndDecodesGoFirst) {
  Fixture f(64);
  Sequence* a = f.add(3);
  ScheduledStep s1 = f.scheduler.schedule();
  ASSERT_EQ(s1.chunks.size(), 1u);
  f.run(s1);
  Sequence* b = f.add(40);  // 40 tokens under a 16-token budget
  for (int step = 0; step < 3; ++step) {
    const ScheduledStep s = f.scheduler.schedule();
    ASSERT_EQ(s.chunks.size(), 2u);
    EXPECT_EQ(s.chunks[0].sequence, a) << "the decode comes first";
    EXPECT_EQ(s.chunks[0].tokens, 1);
    EXPECT_EQ(s.chunks[1].sequence, b);
    EXPECT_EQ(s.chunks[1].tokens, std::min(15, 40 - 15 * step));
    f.run(s);
  }
  EXPECT_EQ(b->computed, 40);
  EXPECT_EQ(b->generated(), 1);
}

TEST(Scheduler, AdmitsOnlyWhenTheWholePromptFits) {
  Fixture f(4);            // 16 positions
  f.add(10);               // 3 blocks
  Sequence* b = f.add(8);  // 2 blocks: does not fit next to the first
  const ScheduledStep s = f.scheduler.schedule();
  ASSERT_EQ(s.chunks.size(), 1u);
  EXPECT_EQ(f.scheduler.num_waiting(), 1);
  f.run(s);
  f.scheduler.remove(f.sequences[0].get());  // finished: blocks back
  const ScheduledStep s2 = f.scheduler.schedule();
  ASSERT_EQ(s2.chunks.size(), 1u);
  EXPECT_EQ(s2.chunks[0].sequence, b);
}

TEST(Scheduler, ADecodeWithoutBlocksPreemptsTheNewest) {
  Fixture f(3);  // 12 positions
  Sequence* old = f.add(4);
  Sequence* young = f.add(4);
  f.run(f.scheduler.schedule());  // both prefilled: 2 blocks used, each full
  ASSERT_EQ(old->generated(), 1);
  ASSERT_EQ(young->generated(), 1);
  // Both need a new block for their next position; only one is free.
  const ScheduledStep s = f.scheduler.schedule();
  ASSERT_EQ(s.preempted.size(), 1u);
  EXPECT_EQ(s.preempted[0], young);
  ASSERT_EQ(s.chunks.size(), 1u);
  EXPECT_EQ(s.chunks[0].sequence, old);
  EXPECT_EQ(young->computed, 0) << "recomputed from its tokens when it runs again";
  EXPECT_TRUE(young->table.blocks.empty());
  EXPECT_EQ(f.scheduler.num_preempted(), 1);
  EXPECT_EQ(f.scheduler.preemptions(), 1);
}

// Micro-batches: a step takes at most its share of the sequences, and a sequence whose step is
// in flight is neither scheduled again nor taken as a victim; a decode short of blocks waits for
// a newer sequence in flight instead of preempting itself, and preempts it once it is back.
TEST(Scheduler, SequencesInFlightAreNeitherScheduledNorPreempted) {
  Fixture f(3);  // 12 positions
  Sequence* old = f.add(4);
  Sequence* young = f.add(4);
  const ScheduledStep first = f.scheduler.schedule(/*max_sequences=*/1);
  ASSERT_EQ(first.chunks.size(), 1u) << "one sequence per micro-batch";
  EXPECT_EQ(first.chunks[0].sequence, old);
  old->in_flight = 1;
  const ScheduledStep second = f.scheduler.schedule(1);
  ASSERT_EQ(second.chunks.size(), 1u);
  EXPECT_EQ(second.chunks[0].sequence, young);
  young->in_flight = 1;
  EXPECT_TRUE(f.scheduler.schedule(1).chunks.empty()) << "both in flight";
  old->in_flight = 0;
  f.run(first);  // old is back; its next position needs a third block, the last one free
  const ScheduledStep third = f.scheduler.schedule(1);
  ASSERT_EQ(third.chunks.size(), 1u);
  EXPECT_EQ(third.chunks[0].sequence, old);
  old->in_flight = 1;
  young->in_flight = 0;
  f.run(second);
  // young needs a block, none is free, and the only other sequence is in flight (older): young
  // preempts itself, as at one micro-batch.
  const ScheduledStep fourth = f.scheduler.schedule(1);
  EXPECT_TRUE(fourth.chunks.empty());
  ASSERT_EQ(fourth.preempted.size(), 1u);
  EXPECT_EQ(fourth.preempted[0], young);
}

TEST(Scheduler, ADecodeWaitsForANewerSequenceInFlightInsteadOfPreemptingItself) {
  Fixture f(2);  // 8 positions
  Sequence* old = f.add(4);
  Sequence* young = f.add(4);
  f.run(f.scheduler.schedule());  // both prefilled, each block full, none free
  young->in_flight = 1;           // say young's next step were in flight
  const ScheduledStep waits = f.scheduler.schedule();
  EXPECT_TRUE(waits.chunks.empty());
  EXPECT_TRUE(waits.preempted.empty()) << "old waits for young's step to come back";
  young->in_flight = 0;
  const ScheduledStep s = f.scheduler.schedule();
  ASSERT_EQ(s.preempted.size(), 1u);
  EXPECT_EQ(s.preempted[0], young);
  ASSERT_EQ(s.chunks.size(), 1u);
  EXPECT_EQ(s.chunks[0].sequence, old);
}

// Overlap: a sequence in flight whose next token is a placeholder for the one its step samples
// decodes it in the next step where a block is free, but never preempts anyone for it: without
// room it waits for its step like any sequence in flight (and the newer one preempts itself).
TEST(Scheduler, ASequenceAwaitingItsTokenRunsAheadOnlyWhereBlocksAreFree) {
  Fixture f(2);  // 8 positions
  Sequence* old = f.add(4);
  Sequence* young = f.add(4);
  f.run(f.scheduler.schedule());  // both prefilled, each block full, none free
  old->in_flight = 1;             // its step is out, and the engine ran ahead of it
  old->ahead = true;
  const ScheduledStep s = f.scheduler.schedule();
  EXPECT_TRUE(s.chunks.empty());
  ASSERT_EQ(s.preempted.size(), 1u);
  EXPECT_EQ(s.preempted[0], young) << "young preempts itself; old takes nothing";
  const ScheduledStep ahead = f.scheduler.schedule();  // young's block is free now
  ASSERT_EQ(ahead.chunks.size(), 1u);
  EXPECT_EQ(ahead.chunks[0].sequence, old);
  EXPECT_EQ(ahead.chunks[0].tokens, 1);
  old->in_flight = 2;  // in both steps: not scheduled a third time
  EXPECT_TRUE(f.scheduler.schedule().chunks.empty());
}

TEST(Scheduler, RunningLimitCountsForksAndTheBudgetMustCoverIt) {
  BlockManager manager(4, 4);
  EXPECT_THROW(Scheduler(manager, SchedulerConfig{8, 16}), Error);
  Fixture f(64, {16, 4});
  Sequence* a = f.add(3);
  for (int i = 0; i < 3; ++i) a->forks.push_back(f.add(3, /*enqueue=*/false));  // 1 + 3 seats
  f.add(3);
  const ScheduledStep s = f.scheduler.schedule();
  ASSERT_EQ(s.chunks.size(), 1u) << "the fifth seat is over the limit of 4";
  EXPECT_EQ(s.chunks[0].sequence, a);
}

}  // namespace
}  // namespace dsmath
