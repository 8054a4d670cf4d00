// The public API's bearer token (coordinator/auth.h): token files are read as the coordinator
// and the CLI read them, and the comparison is exact. (The calls themselves are checked end to
// end in e2e.serve's AuthTest.)
#include "coordinator/auth.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/core/error.h"

namespace dsmath {
namespace {

std::string write_file(const std::string& name, const std::string& text) {
  const auto path = std::filesystem::temp_directory_path() / ("dsmath-auth-" + name);
  std::ofstream(path) << text;
  return path.string();
}

TEST(BearerAuth, ConstantTimeEqualIsExactEquality) {
  EXPECT_TRUE(constant_time_equal("", ""));
  EXPECT_TRUE(constant_time_equal("abcdef", "abcdef"));
  EXPECT_FALSE(constant_time_equal("abcdef", "abcdeg"));
  EXPECT_FALSE(constant_time_equal("abcdef", "bbcdef"));
  EXPECT_FALSE(constant_time_equal("abcdef", "abcde"));
  EXPECT_FALSE(constant_time_equal("abc", std::string("abc\0", 4)));
}

TEST(BearerAuth, TokenFilesAreCheckedAndNamed) {
  const std::string token(32, 'k');
  EXPECT_EQ(BearerAuth::read_token_file(write_file("ok", token + "\n\n"), "--auth-token-file"),
            token)
      << "trailing whitespace is not part of the token";
  auto error_of = [](const std::string& path) {
    try {
      BearerAuth::read_token_file(path, "--auth-token-file");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const std::string short_file = write_file("short", "abc");
  EXPECT_EQ(error_of(short_file).rfind("--auth-token-file " + short_file + ": the token has 3", 0),
            0u)
      << error_of(short_file);
  EXPECT_NE(error_of(write_file("space", "abcdefgh ijklmnopq")).find("without spaces"),
            std::string::npos);
  EXPECT_NE(error_of("/nonexistent/dsmath-token").find("cannot read"), std::string::npos);
  EXPECT_FALSE(BearerAuth().enabled());
  EXPECT_TRUE(BearerAuth(token, "how").enabled());
}

}  // namespace
}  // namespace dsmath
