#include "common/core/json_file.h"

#include <fstream>
#include <sstream>

#include "common/core/error.h"

namespace dsmath {

Json read_json_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open ", path.string());
  std::stringstream buf;
  buf << in.rdbuf();
  try {
    return Json::parse(buf.str());
  } catch (const Json::exception& e) {
    fail(path.string(), ": invalid JSON: ", e.what());
  }
}

}  // namespace dsmath
