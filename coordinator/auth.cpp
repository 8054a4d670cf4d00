#include "coordinator/auth.h"

#include <cctype>
#include <fstream>
#include <sstream>

#include "common/core/error.h"

namespace dsmath {

bool constant_time_equal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char differ = 0;
  for (size_t i = 0; i < a.size(); ++i) differ |= static_cast<unsigned char>(a[i] ^ b[i]);
  return differ == 0;
}

std::string BearerAuth::read_token_file(const std::string& path, std::string_view flag) {
  std::ifstream in(path, std::ios::binary);
  DSMATH_CHECK(in.good(), flag, " ", path, ": cannot read the file");
  std::ostringstream text;
  text << in.rdbuf();
  std::string token = text.str();
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) token.pop_back();
  DSMATH_CHECK(token.size() >= 16 && token.size() <= 4096, flag, " ", path, ": the token has ",
               token.size(), " bytes; use 16 to 4096 (e.g. `openssl rand -hex 32 > ", path, "`)");
  for (char c : token)
    DSMATH_CHECK(c > ' ' && c < 127, flag, " ", path,
                 ": the token must be printable ASCII without spaces (it travels as a header)");
  return token;
}

grpc::Status BearerAuth::check(const grpc::ServerContextBase& context) const {
  if (!enabled()) return grpc::Status::OK;
  const auto& metadata = context.client_metadata();
  const auto it = metadata.find("authorization");
  if (it == metadata.end())
    return {grpc::StatusCode::UNAUTHENTICATED,
            "missing bearer token: send the metadata 'authorization: Bearer <token>' (" +
                how_to_send_ + ")"};
  const std::string_view value(it->second.data(), it->second.size());
  constexpr std::string_view kScheme = "Bearer ";
  if (value.substr(0, kScheme.size()) != kScheme ||
      !constant_time_equal(value.substr(kScheme.size()), token_))
    return {grpc::StatusCode::UNAUTHENTICATED, "wrong bearer token"};
  return grpc::Status::OK;
}

}  // namespace dsmath
