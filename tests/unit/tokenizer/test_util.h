// Helpers shared by the tokenizer tests: golden files, temporary directories, processes.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace dsmath::test {

using Json = nlohmann::json;

std::filesystem::path tokenizer_dir(const std::string& name);
std::vector<Json> read_jsonl(const std::filesystem::path& path);
std::vector<int32_t> ids_of(const Json& array);

// A fresh directory under the system temp dir, removed when the object goes away.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

void write_file(const std::filesystem::path& path, const std::string& content);
std::string read_file(const std::filesystem::path& path);

// Runs a shell command; returns its exit status and fills `output` with stdout.
int run_command(const std::string& command, std::string* output);

}  // namespace dsmath::test
