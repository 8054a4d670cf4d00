#include "common/checkpoint/fingerprint.h"

#include <cstdio>
#include <fstream>
#include <iterator>

#include "common/core/error.h"
#include "common/core/hash.h"

namespace dsmath {

std::string model_fingerprint(const std::filesystem::path& dir) {
  DSMATH_CHECK(std::filesystem::exists(dir / "config.json"), "model directory ", dir.string(),
               " has no config.json");
  uint64_t h = kFnvOffset;
  auto fold = [&](const std::string& bytes) {
    for (unsigned char c : bytes) h = fnv1a_step(h, c);
    h = fnv1a_step(h, bytes.size());
  };
  for (const char* name :
       {"config.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model"}) {
    std::ifstream in(dir / name, std::ios::binary);
    if (!in) continue;
    fold(name);
    fold(std::string(std::istreambuf_iterator<char>(in), {}));
    DSMATH_CHECK(!in.bad(), "cannot read ", (dir / name).string());
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(mix64(h)));
  return hex;
}

}  // namespace dsmath
