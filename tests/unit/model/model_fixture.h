// Makes a seeded `tiny` checkpoint with dsmath-make-model in a temporary directory and
// removes it at the end of the test suite.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace dsmath::testing {

inline std::filesystem::path make_model(const std::string& name,
                                        const std::vector<std::string>& args) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("dsmath-test-" + name + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::string cmd = std::string(DSMATH_BIN_DIR) + "/dsmath-make-model";
  for (const std::string& a : args) cmd += " '" + a + "'";
  cmd += " --out '" + dir.string() + "' > /dev/null";
  if (std::system(cmd.c_str()) != 0) {
    ADD_FAILURE() << "command failed: " << cmd;
  }
  return dir;
}

}  // namespace dsmath::testing
