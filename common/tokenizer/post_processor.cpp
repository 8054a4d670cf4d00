#include "common/tokenizer/post_processor.h"

#include "common/core/error.h"
#include "common/tokenizer/bpe.h"

namespace dsmath {

void PostProcessor::apply(std::vector<int32_t>& ids) const {
  ids.insert(ids.begin(), prefix_.begin(), prefix_.end());
  ids.insert(ids.end(), suffix_.begin(), suffix_.end());
}

namespace {

void add_processor(const Json& config, const std::string& where, std::vector<int32_t>& prefix,
                   std::vector<int32_t>& suffix) {
  if (!config.is_object() || !config.contains("type"))
    fail(where, ": expected an object with 'type'");
  const std::string type = config["type"].get<std::string>();
  if (type == "ByteLevel") return;  // only trims offsets
  if (type == "Sequence") {
    const Json& list = config.value("processors", Json::array());
    for (size_t i = 0; i < list.size(); ++i) {
      add_processor(list[i], cat(where, ".processors[", i, "]"), prefix, suffix);
    }
    return;
  }
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    auto id_of = [&](const char* key) {
      if (!config.contains(key) || !config[key].is_array() || config[key].size() != 2) {
        fail(where, ".", key, ": expected [token, id]");
      }
      return parse_token_id(config[key][1], cat(where, ".", key, "[1]"));
    };
    prefix.insert(prefix.begin(), id_of("cls"));
    suffix.push_back(id_of("sep"));
    return;
  }
  if (type == "TemplateProcessing") {
    if (!config.contains("single") || !config["single"].is_array()) {
      fail(where, ".single: missing template");
    }
    const Json& specials = config.value("special_tokens", Json::object());
    std::vector<int32_t> before, after;
    bool seen_sequence = false;
    for (size_t i = 0; i < config["single"].size(); ++i) {
      const Json& item = config["single"][i];
      const std::string item_where = cat(where, ".single[", i, "]");
      if (item.contains("Sequence")) {
        seen_sequence = true;
        continue;
      }
      if (!item.contains("SpecialToken")) fail(item_where, ": expected Sequence or SpecialToken");
      const std::string name = item["SpecialToken"].value("id", std::string());
      if (!specials.contains(name) || !specials[name].contains("ids")) {
        fail(item_where, ": special token '", name, "' is not in special_tokens");
      }
      auto& target = seen_sequence ? after : before;
      for (const auto& id : specials[name]["ids"])
        target.push_back(parse_token_id(id, cat(item_where, ": special token '", name, "'")));
    }
    // A template wraps whatever earlier processors produced.
    prefix.insert(prefix.begin(), before.begin(), before.end());
    suffix.insert(suffix.end(), after.begin(), after.end());
    return;
  }
  fail(where, ": unsupported post_processor type '", type, "'");
}

}  // namespace

std::unique_ptr<PostProcessor> make_post_processor(const Json& config, const std::string& where) {
  if (config.is_null()) return nullptr;
  std::vector<int32_t> prefix, suffix;
  add_processor(config, where, prefix, suffix);
  return std::make_unique<PostProcessor>(std::move(prefix), std::move(suffix));
}

}  // namespace dsmath
