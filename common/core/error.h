// Errors: one exception type carrying a human sentence that names the file, field,
// flag or request at fault. CLI entry points print what() and exit non-zero; the
// gRPC layer maps it to a status code.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace dsmath {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Concatenates any streamable values: cat("tensor ", name, " has ", n, " dims").
template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}

template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  throw Error(cat(args...));
}

// A file could not be written (disk full, quota, an I/O error). What was written before is
// intact, so the work can go on once there is room: a served batch job waits and retries
// instead of failing (coordinator/batch_jobs).
class StorageError : public Error {
 public:
  using Error::Error;
};

template <typename... Args>
[[noreturn]] void fail_storage(const Args&... args) {
  throw StorageError(cat(args...));
}

}  // namespace dsmath

// DSMATH_CHECK(cond, "message parts", ...): throws dsmath::Error when cond is false.
#define DSMATH_CHECK(cond, ...)               \
  do {                                        \
    if (!(cond)) ::dsmath::fail(__VA_ARGS__); \
  } while (0)
