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

TEST(TokenizerErrors, InvalidUtf8InputIsRejected) {
  const Tokenizer t = Tokenizer::load(test::tokenizer_dir("llama2"));
  EXPECT_THROW(t.encode("bad \xFF byte"), Error);
}

}  // namespace
}  // namespace dsmath
