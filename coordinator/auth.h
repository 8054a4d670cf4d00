// Bearer-token authentication of the public API (--auth-token-file). With a token set, every
// dsmath.v1.Generation and dsmath.v1.BatchJobs call must carry the metadata
// `authorization: Bearer <token>`, or it ends UNAUTHENTICATED; the gRPC health service stays
// open, so that load balancers can probe it. The token is compared in constant time: how long
// a refusal takes says nothing about how much of a guess was right.
#pragma once

#include <grpcpp/grpcpp.h>

#include <string>
#include <string_view>

namespace dsmath {

class BearerAuth {
 public:
  BearerAuth() = default;  // no token: every call is let in
  explicit BearerAuth(std::string token) : token_(std::move(token)) {}

  // The token in `path` (what --auth-token-file / the CLI read): the file's text without
  // trailing whitespace, printable ASCII without spaces, 16 to 4096 bytes. Throws Error
  // naming `flag` and the file otherwise.
  static std::string read_token_file(const std::string& path, std::string_view flag);

  bool enabled() const { return !token_.empty(); }
  // OK, or UNAUTHENTICATED saying what is missing or wrong (never the token).
  grpc::Status check(const grpc::ServerContextBase& context) const;

 private:
  std::string token_;
};

// a == b, in time that depends on the lengths only.
bool constant_time_equal(std::string_view a, std::string_view b);

}  // namespace dsmath
