// A served model without weights (the coordinator reads none): config.json with a short
// context, generation_config.json, and the DeepSeekMath-like tokenizer of tests/data.
#pragma once

#include "coordinator/served_model.h"

namespace dsmath::testing {

// Context of 64 positions, vocabulary 102400, EOS 100001; do_sample false (greedy defaults).
const ServedModel& served_model();

}  // namespace dsmath::testing
