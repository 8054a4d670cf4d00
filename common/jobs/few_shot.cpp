#include "common/jobs/few_shot.h"

#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "common/core/error.h"

namespace dsmath {

FewShotTemplate FewShotTemplate::load(const std::filesystem::path& path) {
  std::ifstream in(path);
  DSMATH_CHECK(in, "--template: cannot read ", path.string());
  const std::string bytes(std::istreambuf_iterator<char>(in), {});
  FewShotTemplate t;
  if (path.extension() == ".json") {
    try {
      const nlohmann::json j = nlohmann::json::parse(bytes);
      t.text = j.at("template").get<std::string>();
      if (j.contains("stop")) t.stop = j["stop"].get<std::vector<std::string>>();
    } catch (const std::exception& e) {
      fail("--template ", path.string(),
           ": expected {\"template\": ..., \"stop\": [...]}: ", e.what());
    }
  } else {
    t.text = bytes;
  }
  DSMATH_CHECK(t.text.find("{question}") != std::string::npos, "--template ", path.string(),
               " has no {question}");
  for (const std::string& s : t.stop)
    DSMATH_CHECK(!s.empty(), "--template ", path.string(), ": a stop string is empty");
  return t;
}

std::string FewShotTemplate::render(const std::string& question) const {
  const size_t at = text.find("{question}");
  return text.substr(0, at) + question + text.substr(at + 10);
}

}  // namespace dsmath
