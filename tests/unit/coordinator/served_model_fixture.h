// A served model without weights (the coordinator reads none): config.json with a short
// context, generation_config.json, and the DeepSeekMath-like tokenizer of tests/data.
#pragma once

#include "coordinator/served_model.h"
#include "worker/serve/link_codec.h"

namespace dsmath::testing {

// Context of 64 positions, vocabulary 102400, EOS 100001; do_sample false (greedy defaults).
const ServedModel& served_model();

// A tp 1 group's registration for served_model(), blocks of 16 tokens.
worker::v1::Register group_registration(int32_t kv_blocks, int32_t max_running);

}  // namespace dsmath::testing
