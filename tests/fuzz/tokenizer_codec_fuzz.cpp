// Fuzz target: encode and decode with a real tokenizer (tests/data/tokenizers/
// deepseek_math_like: DeepSeekMath's byte-level BPE, 100k merges, digit splitting, two
// special tokens; common/tokenizer).
// The input is used twice: as text to encode, and as a sequence of ids to decode (each 3 bytes
// little-endian, taken modulo vocab_size + 16 and shifted down by 8, so negative and unknown
// ids occur too).
// Checks, besides no crash and no ASan/UBSan report:
//   - text that is not valid UTF-8 is refused with dsmath::Error; valid text encodes without
//     error to ids inside the vocabulary;
//   - decode(encode(text)) == text: byte-level BPE without a normalizer is lossless, and
//     special-token text decodes to itself (HF tokenizers gives the same);
//   - encode(text, add_special_tokens) is the BOS id followed by encode(text) (LlamaTokenizerFast
//     with add_bos_token, as tokenizer_config.json says);
//   - for any ids, decode() is valid UTF-8, and the IncrementalDetokenizer's pieces are each
//     valid UTF-8 and add up to decode() (with and without special tokens).
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "common/tokenizer/tokenizer.h"
#include "common/tokenizer/unicode.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/test_data.h"

namespace {

const dsmath::Tokenizer& tokenizer() {
  static const dsmath::Tokenizer t =
      dsmath::Tokenizer::load(dsmath::fuzz::test_data() / "tokenizers" / "deepseek_math_like");
  return t;
}

// The detokenizer's pieces must be whole characters and add up to decode().
void check_streamed(const dsmath::Tokenizer& t, const std::vector<int32_t>& ids, bool skip) {
  dsmath::IncrementalDetokenizer detok(t, skip);
  std::string joined;
  for (int32_t id : ids) {
    const std::string piece = detok.push(id);
    FUZZ_CHECK(dsmath::unicode::is_valid_utf8(piece), "a streamed piece is not valid UTF-8");
    joined += piece;
  }
  const std::string tail = detok.flush();
  FUZZ_CHECK(dsmath::unicode::is_valid_utf8(tail), "the flushed tail is not valid UTF-8");
  joined += tail;
  FUZZ_CHECK(joined == t.decode(ids, skip), "streamed text differs from decode (skip ", skip, ")");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const dsmath::Tokenizer& t = tokenizer();
  const int32_t vocab = t.vocab_size();
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  if (!dsmath::unicode::is_valid_utf8(text)) {
    bool refused = false;
    try {
      t.encode(text, false);
    } catch (const dsmath::Error&) {
      refused = true;
    }
    FUZZ_CHECK(refused, "encode accepted invalid UTF-8");
  } else {
    const std::vector<int32_t> ids = t.encode(text, false);
    for (int32_t id : ids) FUZZ_CHECK(id >= 0 && id < vocab, "encode gave the id ", id);
    FUZZ_CHECK(t.decode(ids) == text, "decode(encode(text)) != text");
    std::vector<int32_t> with_bos = {*t.bos_id()};
    with_bos.insert(with_bos.end(), ids.begin(), ids.end());
    FUZZ_CHECK(t.encode(text, true) == with_bos, "encode with special tokens is not BOS + ids");
    check_streamed(t, ids, false);
    check_streamed(t, ids, true);
  }

  std::vector<int32_t> ids;
  for (size_t i = 0; i + 3 <= size; i += 3) {
    const uint32_t v = uint32_t(data[i]) | uint32_t(data[i + 1]) << 8 | uint32_t(data[i + 2]) << 16;
    ids.push_back(int32_t(v % uint32_t(vocab + 16)) - 8);
  }
  for (bool skip : {false, true}) {
    FUZZ_CHECK(dsmath::unicode::is_valid_utf8(t.decode(ids, skip)), "decode gave invalid UTF-8");
    t.decode_bytes(ids, skip);
    check_streamed(t, ids, skip);
  }
  return 0;
}
