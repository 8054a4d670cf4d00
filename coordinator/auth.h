// Bearer-token authentication: of the public API (--auth-token-file: every dsmath.v1.Generation
// and dsmath.v1.BatchJobs call; the gRPC health service stays open, so that load balancers can
// probe it) and of the worker link (--worker-secret-file: a group's Connect). A call must carry
// the metadata `authorization: Bearer <token>`, or it ends UNAUTHENTICATED. The token is
// compared in constant time: how long a refusal takes says nothing about how much of a guess
// was right.
#pragma once

#include <grpcpp/grpcpp.h>

#include <string>
#include <string_view>

namespace dsmath {

class BearerAuth {
 public:
  BearerAuth() = default;  // no token: every call is let in
  // `how_to_send` ends the refusal of a call without a token: how its client sends one.
  BearerAuth(std::string token, std::string how_to_send)
      : token_(std::move(token)), how_to_send_(std::move(how_to_send)) {}

  // The token in `path` (what --auth-token-file / the CLI read): the file's text without
  // trailing whitespace, printable ASCII without spaces, 16 to 4096 bytes. Throws Error
  // naming `flag` and the file otherwise.
  static std::string read_token_file(const std::string& path, std::string_view flag);

  bool enabled() const { return !token_.empty(); }
  // OK, or UNAUTHENTICATED saying what is missing or wrong (never the token).
  grpc::Status check(const grpc::ServerContextBase& context) const;

 private:
  std::string token_, how_to_send_;
};

// a == b, in time that depends on the lengths only.
bool constant_time_equal(std::string_view a, std::string_view b);

}  // namespace dsmath
