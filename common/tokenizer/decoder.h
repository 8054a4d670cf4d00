// tokenizer.json "decoder": ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip,
// BPEDecoder, Sequence, with HF's decode_chain semantics. Works on bytes: with `lossy` false, bytes
// that do not form valid UTF-8 are kept as they are (the incremental detokenizer needs them); with
// `lossy` true they become U+FFFD exactly where HF puts them.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/core/json_file.h"

namespace dsmath {

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void decode_chain(std::vector<std::string>& tokens, bool lossy) const = 0;
};

std::unique_ptr<Decoder> make_decoder(const Json& config, const std::string& where);

}  // namespace dsmath
