// gRPC status codes by the names gRPC gives them, for metrics labels and error lines.
#pragma once

#include <grpcpp/support/status_code_enum.h>

#include <iterator>
#include <string_view>

namespace dsmath {

inline std::string_view status_code_name(grpc::StatusCode code) {
  static constexpr std::string_view kNames[] = {"OK",
                                                "CANCELLED",
                                                "UNKNOWN",
                                                "INVALID_ARGUMENT",
                                                "DEADLINE_EXCEEDED",
                                                "NOT_FOUND",
                                                "ALREADY_EXISTS",
                                                "PERMISSION_DENIED",
                                                "RESOURCE_EXHAUSTED",
                                                "FAILED_PRECONDITION",
                                                "ABORTED",
                                                "OUT_OF_RANGE",
                                                "UNIMPLEMENTED",
                                                "INTERNAL",
                                                "UNAVAILABLE",
                                                "DATA_LOSS",
                                                "UNAUTHENTICATED"};
  const int i = int(code);
  return i >= 0 && i < int(std::size(kNames)) ? kNames[i] : "UNKNOWN";
}

}  // namespace dsmath
