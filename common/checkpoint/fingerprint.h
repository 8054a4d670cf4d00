// What must match between a coordinator and the worker groups that join it: the model's
// config.json and its tokenizer files (the coordinator tokenizes, the workers sample ids of
// the same vocabulary). Weights are not part of it: reading 14 GB to register would be slow,
// and a group on a different copy of the same checkpoint must still be able to join.
#pragma once

#include <filesystem>
#include <string>

namespace dsmath {

// 16 hex digits over the bytes of config.json, tokenizer.json, tokenizer_config.json and
// tokenizer.model (those that exist, in that order, each with its name). Throws Error naming
// the directory when config.json is missing.
std::string model_fingerprint(const std::filesystem::path& dir);

}  // namespace dsmath
