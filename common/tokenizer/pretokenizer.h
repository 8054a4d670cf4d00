// tokenizer.json "pre_tokenizer": Sequence, Split, Digits, ByteLevel, Metaspace, Whitespace,
// WhitespaceSplit. Each step splits every current piece further, as HF PreTokenizedString does.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/core/json_file.h"

namespace dsmath {

struct PreSplit {
  std::string text;
  bool at_start;  // begins at offset 0 of the original input (Metaspace prepend_scheme "first")
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual void pre_tokenize(std::vector<PreSplit>& splits) const = 0;
};

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const Json& config, const std::string& where);

// GPT-2's byte <-> printable-char table used by ByteLevel pre-tokenizer and decoder.
const std::string& byte_to_char(unsigned char byte);  // UTF-8 of the mapped char
int char_to_byte(char32_t c);                         // -1 when c is not in the table

}  // namespace dsmath
