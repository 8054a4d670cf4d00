// Where the fuzz targets find tests/data: $DSMATH_TEST_DATA, else the source tree's (compiled
// in by tests/fuzz/CMakeLists.txt).
#pragma once

#include <cstdlib>
#include <filesystem>

namespace dsmath::fuzz {

inline std::filesystem::path test_data() {
  if (const char* dir = std::getenv("DSMATH_TEST_DATA"); dir && *dir) return dir;
  return DSMATH_TEST_DATA;
}

}  // namespace dsmath::fuzz
