// tokenizer.model back end (no tokenizer.json): libsentencepiece, with the special-token
// handling of transformers' slow LlamaTokenizer: the text of <unk>, <s>, </s> in the input is
// cut out and mapped to those ids, each remaining chunk is encoded on its own (so each gets
// sentencepiece's dummy prefix, as legacy LlamaTokenizer does), and BOS/EOS are added per
// add_bos_token (default true) / add_eos_token (default false).
//
// Built as its own module (libdsmath_sentencepiece.so) and loaded in isolation by
// sentencepiece_loader.cpp: Debian's libsentencepiece carries a private copy of protobuf-lite
// whose exported symbols would otherwise clash with libprotobuf in the gRPC binaries.
#include <sentencepiece_processor.h>

#include "common/core/error.h"
#include "common/tokenizer/tokenizer_impl.h"
#include "common/tokenizer/unicode.h"

namespace dsmath {

class SentencePieceTokenizer : public Tokenizer::Impl {
 public:
  SentencePieceTokenizer(const std::filesystem::path& file, const Json& config) {
    const auto status = sp_.Load(file.string());
    if (!status.ok()) fail(file.string(), ": cannot load sentencepiece model: ", status.ToString());
    add_bos_ = config.is_object() ? config.value("add_bos_token", true) : true;
    add_eos_ = config.is_object() ? config.value("add_eos_token", false) : false;
    for (int id : {sp_.unk_id(), sp_.bos_id(), sp_.eos_id()}) {
      if (id >= 0) specials_.emplace_back(sp_.IdToPiece(id), id);
    }
    // Whether decoding drops the space of the first piece (add_dummy_prefix): probe it
    // rather than parse the model proto, whose headers Debian does not ship.
    const auto pieces = sp_.EncodeAsPieces("a");
    strip_first_space_ = !pieces.empty() && pieces[0].rfind("\u2581", 0) == 0;
    if (add_bos_ && sp_.bos_id() < 0)
      fail(file.string(), ": add_bos_token but the model has no BOS");
    if (add_eos_ && sp_.eos_id() < 0)
      fail(file.string(), ": add_eos_token but the model has no EOS");
  }

  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const override {
    if (!unicode::is_valid_utf8(text)) fail("text to encode is not valid UTF-8");
    std::vector<int32_t> ids;
    if (add_special_tokens && add_bos_) ids.push_back(sp_.bos_id());
    size_t chunk_start = 0;
    auto flush = [&](size_t end) {
      if (end <= chunk_start) return;
      std::vector<int> chunk;
      const auto status = sp_.Encode(text.substr(chunk_start, end - chunk_start), &chunk);
      if (!status.ok()) fail("sentencepiece encode failed: ", status.ToString());
      ids.insert(ids.end(), chunk.begin(), chunk.end());
    };
    for (size_t pos = 0; pos < text.size();) {
      size_t best_len = 0;
      int best_id = -1;
      for (const auto& [piece, id] : specials_) {
        if (piece.size() > best_len && text.compare(pos, piece.size(), piece) == 0) {
          best_len = piece.size();
          best_id = id;
        }
      }
      if (best_len == 0) {
        ++pos;
        continue;
      }
      flush(pos);
      ids.push_back(best_id);
      pos += best_len;
      chunk_start = pos;
    }
    flush(text.size());
    if (add_special_tokens && add_eos_) ids.push_back(sp_.eos_id());
    return ids;
  }

  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens,
                     bool lossy) const override {
    // Kept special tokens are written as their text between sentencepiece-decoded runs; each
    // run is decoded on its own, like the chunks encode() gives to sentencepiece.
    std::string out;
    std::vector<int> run;
    auto flush = [&] {
      if (run.empty()) return;
      out += lossy ? sp_.DecodeIds(run) : decode_raw(run);
      run.clear();
    };
    for (int32_t id : ids) {
      if (id < 0 || id >= sp_.GetPieceSize()) continue;
      if (sp_.IsControl(id)) {
        // Skipped specials do not cut the run: sentencepiece decodes around them.
        if (!skip_special_tokens) {
          flush();
          out += sp_.IdToPiece(id);
        }
        continue;
      }
      if (skip_special_tokens && sp_.IsUnknown(id)) continue;
      run.push_back(id);
    }
    flush();
    return out;
  }

  std::optional<int32_t> bos_id() const override {
    return sp_.bos_id() >= 0 ? std::optional<int32_t>(sp_.bos_id()) : std::nullopt;
  }
  std::optional<int32_t> eos_id() const override {
    return sp_.eos_id() >= 0 ? std::optional<int32_t>(sp_.eos_id()) : std::nullopt;
  }

  std::optional<int32_t> token_to_id(std::string_view token) const override {
    const int id = sp_.PieceToId(token);
    if (id < 0 || (id == sp_.unk_id() && sp_.IdToPiece(id) != token)) return std::nullopt;
    return id;
  }

  std::optional<std::string> id_to_token(int32_t id) const override {
    if (id < 0 || id >= sp_.GetPieceSize()) return std::nullopt;
    return sp_.IdToPiece(id);
  }

  bool is_special(int32_t id) const override {
    return id >= 0 && id < sp_.GetPieceSize() && (sp_.IsControl(id) || sp_.IsUnknown(id));
  }

  int32_t vocab_size() const override { return sp_.GetPieceSize(); }

 private:
  // sentencepiece's own decoding rules, but byte pieces stay raw bytes instead of becoming
  // U+FFFD when they do not (yet) form a character.
  std::string decode_raw(const std::vector<int>& ids) const {
    std::string out;
    bool at_start = true;
    for (int id : ids) {
      std::string piece = sp_.IdToPiece(id);
      if (sp_.IsByte(id)) {
        out.push_back(static_cast<char>(std::stoi(piece.substr(3, 2), nullptr, 16)));
        at_start = false;
        continue;
      }
      if (sp_.IsUnknown(id)) {
        out += " \u2047 ";  // sentencepiece's default unk surface
        at_start = false;
        continue;
      }
      if (at_start && strip_first_space_ && piece.rfind("\u2581", 0) == 0) piece.erase(0, 3);
      at_start = false;
      for (size_t pos = 0; pos < piece.size();) {
        if (piece.compare(pos, 3, "\u2581") == 0) {
          out.push_back(' ');
          pos += 3;
        } else {
          out.push_back(piece[pos++]);
        }
      }
    }
    return out;
  }

  sentencepiece::SentencePieceProcessor sp_;
  std::vector<std::pair<std::string, int>> specials_;
  bool add_bos_ = true;
  bool add_eos_ = false;
  bool strip_first_space_ = true;
};

}  // namespace dsmath

// The module's one entry point. Returns null and sets `error` when the model cannot be loaded.
extern "C" __attribute__((visibility("default"))) const dsmath::Tokenizer::Impl*
dsmath_load_sentencepiece(const char* file, const char* config_json, std::string* error) {
  try {
    const dsmath::Json config = dsmath::Json::parse(config_json);
    return new dsmath::SentencePieceTokenizer(file, config);
  } catch (const std::exception& e) {
    *error = e.what();
    return nullptr;
  }
}
