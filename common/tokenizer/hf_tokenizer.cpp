// tokenizer.json back end: added tokens -> normalizer -> pre-tokenizer -> BPE ->
// post-processor, and the decoder chain, in the order and with the rules of HF `tokenizers`.
#include <set>

#include "common/core/error.h"
#include "common/tokenizer/added_tokens.h"
#include "common/tokenizer/bpe.h"
#include "common/tokenizer/decoder.h"
#include "common/tokenizer/normalizer.h"
#include "common/tokenizer/post_processor.h"
#include "common/tokenizer/pretokenizer.h"
#include "common/tokenizer/tokenizer_impl.h"
#include "common/tokenizer/unicode.h"

namespace dsmath {
namespace {

// transformers' tokenizer classes whose fast version rebuilds the post-processor from
// add_bos_token / add_eos_token (LlamaTokenizerFast.update_post_processor and its copies).
bool rebuilds_post_processor(const std::string& tokenizer_class) {
  static const std::set<std::string> kClasses = {"LlamaTokenizer",     "LlamaTokenizerFast",
                                                 "CodeLlamaTokenizer", "CodeLlamaTokenizerFast",
                                                 "GemmaTokenizer",     "GemmaTokenizerFast"};
  return kClasses.count(tokenizer_class) != 0;
}

// Runs one part's parser. The parsers check the fields they need, but a value of another JSON
// type than expected (a number where a string belongs) would surface as nlohmann's type_error:
// that becomes an Error naming the part, as every other mistake in the file does.
template <typename Parse>
auto parse_part(const std::string& where, Parse parse) -> decltype(parse()) {
  try {
    return parse();
  } catch (const Json::exception& e) {
    fail(where, ": a value has the wrong type or range (", e.what(), ")");
  }
}

class HfTokenizer : public Tokenizer::Impl {
 public:
  HfTokenizer(const Json& json, const std::string& name, const Json& config) {
    if (!json.is_object()) fail(name, ": expected a JSON object");
    if (!json.contains("model")) fail(name, ": missing 'model'");
    model_ = parse_part(name + ": model", [&] {
      return std::make_unique<BpeModel>(json["model"], name + ": model");
    });
    normalizer_ = parse_part(name + ": normalizer", [&] {
      return make_normalizer(json.value("normalizer", Json()), name + ": normalizer");
    });
    pre_tokenizer_ = parse_part(name + ": pre_tokenizer", [&] {
      return make_pre_tokenizer(json.value("pre_tokenizer", Json()), name + ": pre_tokenizer");
    });
    decoder_ = parse_part(name + ": decoder", [&] {
      return make_decoder(json.value("decoder", Json()), name + ": decoder");
    });

    std::vector<AddedToken> added;
    const Json& list = json.value("added_tokens", Json::array());
    for (size_t i = 0; i < list.size(); ++i) {
      const std::string where = cat(name, ": added_tokens[", i, "]");
      added.push_back(parse_part(where, [&] { return parse_added_token(list[i], where); }));
      if (added.back().id < 0) fail(where, ": missing 'id'");
      max_id_ = std::max(max_id_, added.back().id);
    }
    added_ = parse_part(name + ": added_tokens", [&] {
      return std::make_unique<AddedVocabulary>(std::move(added), normalizer_.get());
    });
    max_id_ = std::max(max_id_, model_->max_id());

    parse_part("tokenizer_config.json", [&] { read_config(config); });
    if (!post_processor_) {
      post_processor_ = parse_part(name + ": post_processor", [&] {
        return make_post_processor(json.value("post_processor", Json()), name + ": post_processor");
      });
    }
  }

  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const override {
    if (!unicode::is_valid_utf8(text)) fail("text to encode is not valid UTF-8");
    std::vector<int32_t> ids;
    for (auto& piece : added_->extract_and_normalize(text, normalizer_.get())) {
      if (piece.id >= 0) {
        ids.push_back(piece.id);
        continue;
      }
      std::vector<PreSplit> splits{{std::move(piece.text), piece.at_start}};
      if (pre_tokenizer_) pre_tokenizer_->pre_tokenize(splits);
      for (const auto& split : splits) model_->tokenize(split.text, ids);
    }
    if (add_special_tokens && post_processor_) post_processor_->apply(ids);
    return ids;
  }

  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens,
                     bool lossy) const override {
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (int32_t id : ids) {
      if (const AddedToken* t = added_->by_id(id)) {
        if (!(skip_special_tokens && t->special)) tokens.push_back(t->content);
      } else if (const std::string* s = model_->id_to_token(id)) {
        tokens.push_back(*s);
      }  // HF skips ids it does not know
    }
    if (!decoder_) {
      std::string out;
      for (size_t i = 0; i < tokens.size(); ++i) {
        if (i > 0) out.push_back(' ');
        out += tokens[i];
      }
      return out;
    }
    decoder_->decode_chain(tokens, lossy);
    std::string out;
    for (const auto& t : tokens) out += t;
    return out;
  }

  std::optional<int32_t> bos_id() const override {
    return bos_text_ ? token_to_id(*bos_text_) : std::nullopt;
  }
  std::optional<int32_t> eos_id() const override {
    return eos_text_ ? token_to_id(*eos_text_) : std::nullopt;
  }

  std::optional<int32_t> token_to_id(std::string_view token) const override {
    if (const AddedToken* t = added_->by_content(token)) return t->id;
    return model_->token_to_id(token);
  }

  std::optional<std::string> id_to_token(int32_t id) const override {
    if (const AddedToken* t = added_->by_id(id)) return t->content;
    if (const std::string* s = model_->id_to_token(id)) return *s;
    return std::nullopt;
  }

  bool is_special(int32_t id) const override {
    const AddedToken* t = added_->by_id(id);
    return t != nullptr && t->special;
  }

  int32_t vocab_size() const override { return max_id_ + 1; }

 private:
  // The special tokens, and for the Llama classes the post-processor add_bos_token /
  // add_eos_token make.
  void read_config(const Json& config) {
    const std::string tokenizer_class =
        config.is_object() ? config.value("tokenizer_class", std::string()) : std::string();
    const bool llama = rebuilds_post_processor(tokenizer_class);
    // The Llama classes default to "<s>"/"</s>" when the config does not name the tokens.
    bos_text_ = config_token_text(config, "bos_token",
                                  llama ? std::optional<std::string>("<s>") : std::nullopt);
    eos_text_ = config_token_text(config, "eos_token",
                                  llama ? std::optional<std::string>("</s>") : std::nullopt);
    if (llama) {
      const bool add_bos = config.value("add_bos_token", true);
      const bool add_eos = config.value("add_eos_token", false);
      std::vector<int32_t> prefix, suffix;
      if (add_bos) prefix.push_back(resolve(bos_text_, "bos_token"));
      if (add_eos) suffix.push_back(resolve(eos_text_, "eos_token"));
      post_processor_ = std::make_unique<PostProcessor>(std::move(prefix), std::move(suffix));
    }
  }

  int32_t resolve(const std::optional<std::string>& text, const char* key) const {
    if (!text) fail("tokenizer_config.json: add_", key, " is true but ", key, " is null");
    auto id = token_to_id(*text);
    if (!id) fail("tokenizer_config.json: ", key, " \"", *text, "\" is not in the vocabulary");
    return *id;
  }

  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<Decoder> decoder_;
  std::unique_ptr<AddedVocabulary> added_;
  std::unique_ptr<PostProcessor> post_processor_;
  std::optional<std::string> bos_text_, eos_text_;
  int32_t max_id_ = -1;
};

}  // namespace

std::shared_ptr<const Tokenizer::Impl> load_hf_tokenizer(const Json& json, const std::string& name,
                                                         const Json& config) {
  return std::make_shared<HfTokenizer>(json, name, config);
}

}  // namespace dsmath
