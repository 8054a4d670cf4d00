// FUZZ_CHECK(cond, "message parts", ...): a property a fuzz target asserts. When it does not
// hold, prints the condition and the message and aborts, so libFuzzer (or replay_main) keeps
// the input as a crash. Exceptions other than dsmath::Error are simply left uncaught: they end
// in std::terminate, which reports their type and what().
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

#include "common/core/error.h"

namespace dsmath::fuzz {

[[noreturn]] inline void check_failed(const char* cond, const char* file, int line,
                                      const std::string& message) {
  std::fprintf(stderr, "%s:%d: FUZZ_CHECK(%s) failed: %s\n", file, line, cond, message.c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace dsmath::fuzz

#define FUZZ_CHECK(cond, ...)                                                              \
  do {                                                                                     \
    if (!(cond))                                                                           \
      ::dsmath::fuzz::check_failed(#cond, __FILE__, __LINE__, ::dsmath::cat(__VA_ARGS__)); \
  } while (0)
