// Trains a sentencepiece BPE model with spm_train at test time and requires the tokenizer's
// ids to equal `spm_encode --output_format=id` on the same model, line by line.
#include <gtest/gtest.h>

#include <sstream>

#include "common/tokenizer/tokenizer.h"
#include "tests/unit/tokenizer/test_util.h"

namespace dsmath {
namespace {

// Same arguments as tools/make_tokenizer_goldens.py (which trained the committed model).
std::string train_command(const std::filesystem::path& corpus,
                          const std::filesystem::path& prefix) {
  return std::string(DSMATH_SPM_TRAIN) + " --input=" + corpus.string() +
         " --model_prefix=" + prefix.string() +
         " --vocab_size=800 --model_type=bpe --byte_fallback=true --character_coverage=1.0"
         " --split_digits=true --normalization_rule_name=identity"
         " --remove_extra_whitespaces=false --add_dummy_prefix=true"
         " --allow_whitespace_only_pieces=true --num_threads=1 --minloglevel=2 2>&1";
}

class SpmTrainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_STRNE(DSMATH_SPM_TRAIN, "")
        << "spm_train not found: install the Debian package sentencepiece";
    ASSERT_STRNE(DSMATH_SPM_ENCODE, "")
        << "spm_encode not found: install the Debian package sentencepiece";
    const auto corpus = test::tokenizer_dir("sentencepiece_bpe") / "corpus.txt";
    std::string log;
    ASSERT_EQ(test::run_command(train_command(corpus, tmp_.path() / "tokenizer"), &log), 0) << log;
    ASSERT_TRUE(std::filesystem::exists(tmp_.path() / "tokenizer.model"));
  }
  test::TempDir tmp_;
};

TEST_F(SpmTrainTest, EncodeEqualsSpmEncode) {
  // Lines of the corpus and every one-line golden text without special-token text (spm_encode
  // does not treat "<s>" in the input as a control token; the tokenizer does, like HF).
  std::vector<std::string> lines;
  std::istringstream corpus(
      test::read_file(test::tokenizer_dir("sentencepiece_bpe") / "corpus.txt"));
  for (std::string line; std::getline(corpus, line);) lines.push_back(line);
  for (const auto& c :
       test::read_jsonl(test::tokenizer_dir("sentencepiece_bpe") / "golden.jsonl")) {
    const std::string text = c["text"];
    if (text.empty() || text.find_first_of("\r\n") != std::string::npos) continue;
    if (text.find("<s>") != std::string::npos || text.find("</s>") != std::string::npos ||
        text.find("<unk>") != std::string::npos) {
      continue;
    }
    lines.push_back(text);
  }
  ASSERT_GE(lines.size(), 200u);
  std::string input;
  for (const auto& line : lines) input += line + "\n";
  test::write_file(tmp_.path() / "input.txt", input);

  std::string output;
  ASSERT_EQ(test::run_command(std::string(DSMATH_SPM_ENCODE) +
                                  " --model=" + (tmp_.path() / "tokenizer.model").string() +
                                  " --output_format=id < " + (tmp_.path() / "input.txt").string(),
                              &output),
            0);
  std::istringstream got(output);
  const Tokenizer tokenizer = Tokenizer::load(tmp_.path());
  size_t checked = 0;
  for (const auto& line : lines) {
    std::string ids_line;
    ASSERT_TRUE(std::getline(got, ids_line)) << "spm_encode gave fewer lines";
    std::vector<int32_t> expected;
    std::istringstream ids(ids_line);
    for (int32_t id; ids >> id;) expected.push_back(id);
    EXPECT_EQ(tokenizer.encode(line, false), expected) << line;
    std::vector<int32_t> with_bos{1};
    with_bos.insert(with_bos.end(), expected.begin(), expected.end());
    EXPECT_EQ(tokenizer.encode(line, true), with_bos) << line;
    // sentencepiece reads "▁" in the input as a space, so only other lines round-trip.
    if (line.find("\u2581") == std::string::npos) {
      EXPECT_EQ(tokenizer.decode(expected, true), line) << line;
    }
    ++checked;
  }
  EXPECT_EQ(checked, lines.size());
}

// The committed model is exactly what spm_train makes from the committed corpus.
TEST_F(SpmTrainTest, CommittedModelIsReproducible) {
  const Tokenizer trained = Tokenizer::load(tmp_.path());
  const Tokenizer committed = Tokenizer::load(test::tokenizer_dir("sentencepiece_bpe"));
  ASSERT_EQ(trained.vocab_size(), committed.vocab_size());
  for (int32_t id = 0; id < trained.vocab_size(); ++id) {
    ASSERT_EQ(trained.id_to_token(id), committed.id_to_token(id)) << "id " << id;
  }
}

}  // namespace
}  // namespace dsmath
