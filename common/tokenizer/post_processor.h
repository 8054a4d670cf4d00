// tokenizer.json "post_processor" for single sequences: TemplateProcessing, BertProcessing,
// RobertaProcessing, ByteLevel (ids unchanged) and Sequence.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/core/json_file.h"

namespace dsmath {

class PostProcessor {
 public:
  // The ids of a single-sequence template: special tokens around the sequence "A".
  PostProcessor(std::vector<int32_t> prefix, std::vector<int32_t> suffix)
      : prefix_(std::move(prefix)), suffix_(std::move(suffix)) {}
  void apply(std::vector<int32_t>& ids) const;

 private:
  std::vector<int32_t> prefix_, suffix_;
};

// Returns nullptr for null. Sequence processors compose into one prefix/suffix pair.
std::unique_ptr<PostProcessor> make_post_processor(const Json& config, const std::string& where);

}  // namespace dsmath
