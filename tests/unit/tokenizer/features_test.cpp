// tokenizer.json features beyond the four shipped tokenizers (variants built from them with
// goldens from HF tokenizers, see tools/make_tokenizer_goldens.py), merges written as pairs,
// and the errors a broken tokenizer directory gives.
#include <gtest/gtest.h>

#include "common/core/error.h"
#include "common/core/json_file.h"
#include "common/tokenizer/tokenizer.h"
#include "tests/unit/tokenizer/test_util.h"

namespace dsmath {
namespace {

using test::Json;

// Writes <tmp>/tokenizer.json as the named tokenizer with `edit` applied.
template <typename Edit>
void write_variant(const test::TempDir& tmp, const std::string& base, Edit edit) {
  Json json = read_json_file(test::tokenizer_dir(base) / "tokenizer.json");
  edit(json);
  test::write_file(tmp.path() / "tokenizer.json", json.dump());
}

std::string load_error(const test::TempDir& tmp) {
  try {
    Tokenizer::load(tmp.path());
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(TokenizerFeatures, MergesAsPairsEqualMergesAsStrings) {
  test::TempDir tmp;
  write_variant(tmp, "deepseek_math_like", [](Json& j) {
    Json pairs = Json::array();
    for (const auto& m : j["model"]["merges"]) {
      const std::string s = m;
      pairs.push_back({s.substr(0, s.find(' ')), s.substr(s.find(' ') + 1)});
    }
    j["model"]["merges"] = pairs;
  });
  const Tokenizer t = Tokenizer::load(tmp.path());
  for (const auto& c :
       test::read_jsonl(test::tokenizer_dir("deepseek_math_like") / "golden.jsonl")) {
    EXPECT_EQ(t.encode(c["text"].get<std::string>(), false), test::ids_of(c["ids"])) << c["text"];
  }
}

class VariantTest : public ::testing::TestWithParam<std::string> {};

// Each variant file: {"base": name, "replace": {top-level keys}, "model": {model keys},
// "config": tokenizer_config.json or null, "cases": [...] in golden.jsonl's format}.
TEST_P(VariantTest, MatchesHuggingFace) {
  const Json variant = read_json_file(test::tokenizer_dir("variants") / (GetParam() + ".json"));
  test::TempDir tmp;
  write_variant(tmp, variant["base"], [&](Json& j) {
    for (const auto& [key, value] : variant["replace"].items()) j[key] = value;
    for (const auto& [key, value] : variant["model"].items()) j["model"][key] = value;
  });
  if (!variant["config"].is_null()) {
    test::write_file(tmp.path() / "tokenizer_config.json", variant["config"].dump());
  }
  const Tokenizer t = Tokenizer::load(tmp.path());
  ASSERT_GE(variant["cases"].size(), 50u);
  for (const auto& c : variant["cases"]) {
    const std::string text = c["text"];
    SCOPED_TRACE(GetParam() + ": " + c["text"].dump());
    EXPECT_EQ(t.encode(text, false), test::ids_of(c["ids"]));
    const auto special = test::ids_of(c["ids_special"]);
    EXPECT_EQ(t.encode(text, true), special);
    EXPECT_EQ(t.decode(special, false), c["decode"]);
    EXPECT_EQ(t.decode(special, true), c["decode_skip"]);
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, VariantTest,
                         ::testing::Values("metaspace_first_nfkc", "metaspace_always_nosplit",
                                           "unk_fused", "bytelevel_gpt2_template",
                                           "split_behaviors", "whitespace_nfkd", "llama_add_eos"));

TEST(TokenizerErrors, NameTheFileAndField) {
  {
    test::TempDir tmp;
    EXPECT_NE(load_error(tmp).find("no tokenizer.json or tokenizer.model"), std::string::npos);
  }
  {
    test::TempDir tmp;
    test::write_file(tmp.path() / "tokenizer.json", "{\"model\": ");
    const auto e = load_error(tmp);
    EXPECT_NE(e.find("tokenizer.json: invalid JSON"), std::string::npos) << e;
  }
  {
    test::TempDir tmp;
    write_variant(tmp, "llama2", [](Json& j) { j["model"]["merges"][5] = "zzzq qqqz"; });
    const auto e = load_error(tmp);
    EXPECT_NE(e.find("tokenizer.json: model.merges[5]: token \"zzzq\" is not in the vocab"),
              std::string::npos)
        << e;
  }
  {
    test::TempDir tmp;
    write_variant(tmp, "deepseek_v3",
                  [](Json& j) { j["pre_tokenizer"]["pretokenizers"][1]["type"] = "NoSuchThing"; });
    const auto e = load_error(tmp);
    EXPECT_NE(
        e.find("pre_tokenizer.pretokenizers[1]: unsupported pre_tokenizer type 'NoSuchThing'"),
        std::string::npos)
        << e;
  }
  {
    test::TempDir tmp;
    write_variant(tmp, "deepseek_v3", [](Json& j) {
      j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
    });
    const auto e = load_error(tmp);
    EXPECT_NE(e.find("pre_tokenizer.pretokenizers[0].pattern.Regex: invalid regex"),
              std::string::npos)
        << e;
  }
  {
    test::TempDir tmp;
    test::write_file(tmp.path() / "tokenizer.model", "not a model");
    const auto e = load_error(tmp);
    EXPECT_NE(e.find("tokenizer.model: cannot load sentencepiece model"), std::string::npos) << e;
  }
  {
    test::TempDir tmp;
    std::filesystem::copy_file(test::tokenizer_dir("llama2") / "tokenizer.json",
                               tmp.path() / "tokenizer.json");
    test::write_file(tmp.path() / "tokenizer_config.json",
                     R"({"tokenizer_class": "LlamaTokenizerFast", "bos_token": "<nope>"})");
    const auto e = load_error(tmp);
    EXPECT_NE(e.find("bos_token \"<nope>\" is not in the vocabulary"), std::string::npos) << e;
  }
}

// Found by tests/fuzz/tokenizer_json_fuzz (the inputs are kept in tests/fuzz/corpus/
// tokenizer_json): a vocabulary id of 2^63 - 1 became -1 as an int32 and was written before the
// start of the id table; an added-token or post-processor id could wrap the same way; a field
// of another JSON type than expected escaped as nlohmann::type_error instead of Error; and a
// Strip decoder's count of 1e19 was converted to int.
TEST(TokenizerErrors, OutOfRangeIdsAndWrongTypesAreErrorsNamingThePart) {
  const Json llama = read_json_file(test::tokenizer_dir("llama2") / "tokenizer.json");
  auto error = [&](auto edit, const std::string& config = "") {
    Json j = llama;
    edit(j);
    try {
      Tokenizer::from_json(j.dump(), config);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  auto expect_in = [](const std::string& message, const std::string& part) {
    EXPECT_NE(message.find(part), std::string::npos) << message;
  };
  expect_in(error([](Json& j) { j["model"]["vocab"]["x"] = INT64_MAX; }),
            "tokenizer.json: model.vocab[\"x\"]: id 9223372036854775807 is not an integer in "
            "[0, 16777215]");
  expect_in(error([](Json& j) { j["model"]["vocab"]["x"] = 4294967295u; }),
            "model.vocab[\"x\"]: id 4294967295");
  expect_in(error([](Json& j) { j["added_tokens"][1]["id"] = 1ll << 40; }),
            "tokenizer.json: added_tokens[1].id: id 1099511627776 is not an integer");
  expect_in(error([](Json& j) { j["post_processor"]["special_tokens"]["<s>"]["ids"] = {-1}; }),
            "tokenizer.json: post_processor.single[0]: special token '<s>': id -1 is not an "
            "integer");
  expect_in(error([](Json& j) { j["decoder"]["decoders"][0]["content"] = 5; }),
            "tokenizer.json: decoder: a value has the wrong type or range ([json.exception.");
  // Strip's counts: 1e19 was converted to int (undefined behaviour), and an empty content with a
  // huge count stripped "" forever.
  expect_in(error([](Json& j) { j["decoder"]["decoders"][3]["stop"] = 1e19; }),
            "tokenizer.json: decoder.decoders[3].stop: expected a non-negative integer, got 1e+19");
  expect_in(error([](Json& j) { j["decoder"]["decoders"][3]["start"] = -1; }),
            "decoder.decoders[3].start: expected a non-negative integer, got -1");
  expect_in(error([](Json& j) { j["decoder"]["decoders"][3]["content"] = ""; }),
            "decoder.decoders[3].content: Strip needs a character to strip");
  expect_in(error([](Json& j) { j["model"]["byte_fallback"] = Json::array(); }),
            "tokenizer.json: model: a value has the wrong type or range");
  expect_in(
      error([](Json&) {}, R"({"tokenizer_class": "LlamaTokenizerFast", "add_bos_token": []})"),
      "tokenizer_config.json: a value has the wrong type or range");
  expect_in(error([](Json&) {}, "[1]"), "tokenizer_config.json: expected a JSON object");
}

TEST(TokenizerFeatures, FromJsonEqualsLoad) {
  const auto dir = test::tokenizer_dir("deepseek_math_like");
  const Tokenizer loaded = Tokenizer::load(dir);
  const Tokenizer parsed = Tokenizer::from_json(test::read_file(dir / "tokenizer.json"),
                                                test::read_file(dir / "tokenizer_config.json"));
  EXPECT_EQ(parsed.bos_id(), loaded.bos_id());
  EXPECT_EQ(parsed.vocab_size(), loaded.vocab_size());
  for (const auto& c : test::read_jsonl(dir / "golden.jsonl"))
    EXPECT_EQ(parsed.encode(c["text"].get<std::string>()),
              loaded.encode(c["text"].get<std::string>()));
  try {
    Tokenizer::from_json("{\"model\": ");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer.json: invalid JSON"), std::string::npos);
  }
}

TEST(TokenizerErrors, InvalidUtf8InputIsRejected) {
  const Tokenizer t = Tokenizer::load(test::tokenizer_dir("llama2"));
  EXPECT_THROW(t.encode("bad \xFF byte"), Error);
}

}  // namespace
}  // namespace dsmath
