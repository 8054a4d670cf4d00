// Decides what each engine step computes, under a token budget and the free KV blocks.
//
// Each step: every running sequence that is decoding gets its one token (oldest first), then
// running sequences part-way through their prompt get chunks, then waiting sequences are
// admitted in arrival order (preempted ones first) with a first chunk, until the step holds
// max_step_tokens tokens. A long prompt is thus spread over several steps instead of stalling
// the running streams, and a step's activations never exceed max_step_tokens rows.
//
// Blocks are taken as sequences grow. When a decode finds none free, the newest running
// sequence is preempted by recompute: its blocks are freed and it waits, at the front, to be
// prefilled again from its tokens (prompt + generated so far). A waiting sequence is admitted
// only when the blocks for its whole remaining prompt are free, so admissions do not force
// immediate preemptions; it starts from the longest cached prefix of its tokens.
//
// Under pipeline parallelism several steps (micro-batches) are in flight at once, each over its
// own sequences: a sequence in flight is neither scheduled again nor preempted until its step
// comes back, and each step takes at most its share of the sequences (max_sequences). The one
// exception is the engine's overlap: a sequence that the engine runs ahead of its step in flight
// (Sequence::ahead: its next prompt chunk, or a placeholder for the token that step samples)
// is scheduled in the next step if blocks allow, without preempting anyone for it.
#pragma once

#include <climits>
#include <cstdint>
#include <deque>
#include <vector>

#include "worker/engine/block_manager.h"
#include "worker/engine/sequence.h"

namespace dsmath {

struct SchedulerConfig {
  int32_t max_step_tokens = 512;  // tokens in one forward: decodes + prompt chunks
  int32_t max_running = 256;      // sequences holding KV blocks (at most max_step_tokens)
};

struct ScheduledChunk {
  Sequence* sequence;
  int32_t tokens;  // computed this step, from sequence->computed on
};

struct ScheduledStep {
  std::vector<ScheduledChunk> chunks;
  std::vector<BlockCopy> copies;     // copy-on-write, before the forward
  std::vector<Sequence*> preempted;  // sent back to waiting by this step
};

class Scheduler {
 public:
  Scheduler(BlockManager& blocks, SchedulerConfig config);

  // A new sequence (with its forks attached) at the back of the queue.
  void enqueue(Sequence* sequence);
  // A fork that has just taken its leader's blocks: running from now on.
  void add_running(Sequence* sequence);
  // Drops a sequence wherever it is (finished or cancelled) and frees its blocks. A waiting
  // leader's forks become leaders of their own.
  void remove(Sequence* sequence);

  // At most max_sequences chunks; sequences in flight are skipped.
  ScheduledStep schedule(int32_t max_sequences = INT32_MAX);

  int32_t num_waiting() const { return int32_t(waiting_.size()); }
  int32_t num_running() const { return int32_t(running_.size()); }
  int32_t num_preempted() const;  // waiting after a preemption
  int64_t preemptions() const { return preemptions_; }
  int64_t cache_hit_tokens() const { return cache_hit_tokens_; }

 private:
  void preempt(Sequence* sequence, ScheduledStep& step);
  bool admit(Sequence* sequence, int32_t budget, ScheduledStep& step);
  // How many of `want` new tokens the free blocks can hold for this table.
  int32_t tokens_that_fit(const BlockTable& table, int32_t want) const;
  int32_t seats_taken() const;  // running sequences and the forks waiting on them

  BlockManager& blocks_;
  SchedulerConfig config_;
  std::deque<Sequence*> waiting_;
  std::vector<Sequence*> running_;  // oldest first
  int64_t preemptions_ = 0;
  int64_t cache_hit_tokens_ = 0;
};

}  // namespace dsmath
