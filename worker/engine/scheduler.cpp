#include "worker/engine/scheduler.h"

#include <algorithm>
#include <unordered_set>

#include "common/core/error.h"

namespace dsmath {

Scheduler::Scheduler(BlockManager& blocks, SchedulerConfig config)
    : blocks_(blocks), config_(config) {
  DSMATH_CHECK(config_.max_step_tokens >= 1, "--max-step-tokens must be at least 1, got ",
               config_.max_step_tokens);
  DSMATH_CHECK(config_.max_running >= 1 && config_.max_running <= config_.max_step_tokens,
               "the running-sequence limit (", config_.max_running,
               ") must be between 1 and --max-step-tokens (", config_.max_step_tokens,
               "): every running sequence needs a token of each decode step");
}

void Scheduler::enqueue(Sequence* s) {
  waiting_.push_back(s);
}

void Scheduler::add_running(Sequence* s) {
  running_.push_back(s);
}

int32_t Scheduler::num_preempted() const {
  return int32_t(std::count_if(waiting_.begin(), waiting_.end(),
                               [](const Sequence* s) { return s->preempted; }));
}

int32_t Scheduler::seats_taken() const {
  size_t seats = running_.size();
  for (const Sequence* s : running_) seats += s->forks.size();
  return int32_t(seats);
}

void Scheduler::remove(Sequence* s) {
  // A sample still waiting for its leader's prefill is only on that leader's list.
  auto detach = [s](Sequence* leader) {
    auto& f = leader->forks;
    f.erase(std::remove(f.begin(), f.end(), s), f.end());
  };
  for (Sequence* leader : waiting_) detach(leader);
  for (Sequence* leader : running_) detach(leader);
  Sequence* heir = nullptr;
  if (!s->forks.empty()) {  // the other samples still need the prompt computed
    heir = s->forks.front();
    heir->forks.assign(s->forks.begin() + 1, s->forks.end());
    s->forks.clear();
  }
  if (auto it = std::find(waiting_.begin(), waiting_.end(), s); it != waiting_.end()) {
    if (heir) {
      *it = heir;
    } else {
      waiting_.erase(it);
    }
  } else {
    if (auto r = std::find(running_.begin(), running_.end(), s); r != running_.end())
      running_.erase(r);
    if (heir) waiting_.push_front(heir);
  }
  if (!s->table.blocks.empty()) blocks_.free(s->table);
  s->computed = 0;
  s->block_hashes.clear();
}

void Scheduler::preempt(Sequence* s, ScheduledStep& step) {
  running_.erase(std::find(running_.begin(), running_.end(), s));
  blocks_.free(s->table);
  s->computed = 0;
  s->block_hashes.clear();
  s->preempted = true;
  waiting_.push_front(s);
  step.preempted.push_back(s);
  ++preemptions_;
}

int32_t Scheduler::tokens_that_fit(const BlockTable& table, int32_t want) const {
  const int32_t bs = blocks_.block_size();
  int64_t free = blocks_.num_free();
  const int32_t partial = table.num_tokens % bs;
  int64_t room = 0;
  if (partial != 0) {
    if (blocks_.ref_count(table.blocks.back()) > 1) {  // shared: writing needs a copy first
      if (free == 0) return 0;
      --free;
    }
    room = bs - partial;
  }
  return int32_t(std::min<int64_t>(want, room + free * bs));
}

// Admits a waiting sequence with a first chunk of at most `budget` tokens, if the blocks for its
// whole remaining prompt are free (after taking its cached prefix).
bool Scheduler::admit(Sequence* s, int32_t budget, ScheduledStep& step) {
  const int32_t bs = blocks_.block_size();
  if (s->computed == 0 && s->table.blocks.empty()) {
    // The last token is always computed (its logits are needed), so at most the blocks before it.
    const int32_t max_blocks = (int32_t(s->tokens.size()) - 1) / bs;
    s->computed = blocks_.take_cached_prefix(s->table, s->tokens, max_blocks, s->block_hashes);
  }
  if (blocks_.blocks_needed(s->table, s->pending()) > blocks_.num_free()) {
    if (!s->table.blocks.empty()) blocks_.free(s->table);  // the cached blocks stay cached
    s->computed = 0;
    s->block_hashes.clear();
    return false;
  }
  if (s->generated() == 0 && !s->preempted) s->request->cached_prompt_tokens = s->computed;
  cache_hit_tokens_ += s->computed;
  const int32_t chunk = std::min(s->pending(), budget);
  for (const BlockCopy& c : blocks_.append(s->table, chunk)) step.copies.push_back(c);
  step.chunks.push_back({s, chunk});
  running_.push_back(s);
  return true;
}

ScheduledStep Scheduler::schedule(int32_t max_sequences) {
  ScheduledStep step;
  int32_t budget = config_.max_step_tokens;
  std::unordered_set<const Sequence*> scheduled;
  // The newest running sequence that is newer than `s`, not scheduled yet and not in flight: who
  // gives up its blocks when `s` cannot grow. Decodes go oldest first before any prompt chunk,
  // so for a decode this is simply the newest such sequence (possibly `s` itself).
  bool newer_in_flight = false;  // of the last victim_for call
  auto victim_for = [&](const Sequence* s) -> Sequence* {
    newer_in_flight = false;
    for (auto it = running_.rbegin(); it != running_.rend() && *it != s; ++it) {
      newer_in_flight |= (*it)->in_flight > 0;
      if (!scheduled.count(*it) && (*it)->in_flight == 0) return *it;
    }
    return nullptr;
  };
  bool deferred = false;  // a sequence waits for blocks that a step in flight may free
  auto schedule_chunk = [&](Sequence* s, int32_t tokens) {
    for (const BlockCopy& c : blocks_.append(s->table, tokens)) step.copies.push_back(c);
    step.chunks.push_back({s, tokens});
    scheduled.insert(s);
    budget -= tokens;
  };

  // Decodes first, then prompts part-way through; oldest first within each.
  std::vector<Sequence*> order = running_;
  std::stable_partition(order.begin(), order.end(),
                        [](const Sequence* s) { return s->pending() == 1; });
  for (Sequence* s : order) {
    // Preempted by an older sequence this step, or its previous step not back yet (unless the
    // engine runs ahead of it).
    if (s->preempted || budget == 0) continue;
    if (s->in_flight > (s->ahead ? 1 : 0)) continue;
    if (int32_t(step.chunks.size()) == max_sequences) break;
    const int32_t want = std::min(s->pending(), budget);
    int32_t chunk = tokens_that_fit(s->table, want);
    // A decode must have its token; a prompt chunk must make some progress. Either may take
    // the blocks of newer sequences.
    // Running ahead is optional: without room it waits for its step like any other.
    while (chunk == 0 && s->in_flight == 0) {
      Sequence* victim = victim_for(s);
      if (victim == nullptr) {
        if (newer_in_flight) {
          deferred = true;  // the newer ones give their blocks up once back, if still short
        } else if (s->pending() == 1) {
          preempt(s, step);  // nothing newer to take from
        }
        break;
      }
      preempt(victim, step);
      chunk = tokens_that_fit(s->table, want);
    }
    if (s->preempted || chunk == 0) continue;
    schedule_chunk(s, chunk);
  }

  // New and preempted sequences, in order, while the budget, the seats and the blocks last;
  // none in a step that had to preempt (they would only thrash).
  while (!waiting_.empty() && budget > 0 && step.preempted.empty() && !deferred &&
         int32_t(step.chunks.size()) < max_sequences) {
    Sequence* s = waiting_.front();
    if (seats_taken() + 1 + int32_t(s->forks.size()) > config_.max_running) break;
    if (!admit(s, budget, step)) break;
    waiting_.pop_front();
    budget -= step.chunks.back().tokens;
  }
  for (const ScheduledChunk& c : step.chunks) c.sequence->preempted = false;
  return step;
}

}  // namespace dsmath
