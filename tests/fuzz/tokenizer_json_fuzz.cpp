// Fuzz target: loading a tokenizer.json (common/tokenizer, hf_tokenizer.cpp) from its text.
// The input is the text of a tokenizer.json; when it holds a NUL byte, what follows the first
// NUL is the text of a tokenizer_config.json. Both go to Tokenizer::from_json.
// Checks, besides no crash and no ASan/UBSan report:
//   - a refused file is a dsmath::Error, never another exception type (nlohmann's type errors
//     included);
//   - a loaded tokenizer encodes a few probe texts (ASCII, digits, CJK, emoji, its own special
//     tokens) failing with nothing but dsmath::Error, its ids are never negative, and decode()
//     of them is valid UTF-8 (as decode promises for any ids);
//   - encoding invalid UTF-8 is refused with dsmath::Error.
// Half the mutations change one of the two files as a JSON tree (json_mutator.h).
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/tokenizer/tokenizer.h"
#include "common/tokenizer/unicode.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/json_mutator.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string_view json = input.substr(0, nul);
  const std::string_view config =
      nul == std::string_view::npos ? std::string_view() : input.substr(nul + 1);
  std::optional<dsmath::Tokenizer> loaded;
  try {
    loaded = dsmath::Tokenizer::from_json(json, config);
  } catch (const dsmath::Error&) {
    return 0;
  }
  const dsmath::Tokenizer& t = *loaded;
  std::vector<std::string> probes = {"Hello world", "  2 + 2 = 4\n\nx^2", "求导数 😀 \\frac{a}{b}",
                                     ""};
  for (std::optional<int32_t> id : {t.bos_id(), t.eos_id()})
    if (id) probes.push_back(std::string("a ").append(t.id_to_token(*id)).append(" b"));
  for (const std::string& text : probes) {
    for (bool special : {false, true}) {
      std::vector<int32_t> ids;
      try {
        ids = t.encode(text, special);
      } catch (const dsmath::Error&) {
        continue;
      }
      for (int32_t id : ids) FUZZ_CHECK(id >= 0, "encode gave the negative id ", id);
      for (bool skip : {false, true}) {
        const std::string decoded = t.decode(ids, skip);
        FUZZ_CHECK(dsmath::unicode::is_valid_utf8(decoded), "decode gave invalid UTF-8");
        t.decode_bytes(ids, skip);
      }
    }
  }
  bool refused = false;
  try {
    t.encode("ok \xC3\x28 \xFF", false);
  } catch (const dsmath::Error&) {
    refused = true;
  }
  FUZZ_CHECK(refused, "encode accepted invalid UTF-8");
  return 0;
}

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size,
                                          unsigned seed) {
  return dsmath::fuzz::mutate_json_parts(data, size, max_size, seed, '\0');
}
