// Loads the tokenizer.model back end (libdsmath_sentencepiece.so, sentencepiece_tokenizer.cpp)
// with RTLD_LOCAL | RTLD_DEEPBIND, so that libsentencepiece binds to its own bundled
// protobuf-lite and libprotobuf (gRPC) to itself: Debian's libsentencepiece exports ~1300
// protobuf symbols of an older version, and in one global scope the two crash each other.
#include <dlfcn.h>
#include <unistd.h>

#include <mutex>

#include "common/core/error.h"
#include "common/tokenizer/tokenizer_impl.h"

namespace dsmath {
namespace {

using LoadFn = const Tokenizer::Impl* (*)(const char*, const char*, std::string*);

// ASan and TSan refuse RTLD_DEEPBIND (the module would bind malloc and the other intercepted
// calls past them: github.com/google/sanitizers/issues/611), so sanitizer builds load the module
// without it. Only a process that also has libprotobuf loaded (the servers, not the tokenizer
// tests) could then meet the clash above.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define DSMATH_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define DSMATH_SANITIZED 1
#endif
#endif
#ifdef DSMATH_SANITIZED
constexpr int kDlopenFlags = RTLD_NOW | RTLD_LOCAL;
#else
constexpr int kDlopenFlags = RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND;
#endif

// DSMATH_SENTENCEPIECE_MODULE, else lib/ next to the binary's bin/, else the build tree's.
std::vector<std::string> module_candidates() {
  std::vector<std::string> paths;
  if (const char* env = std::getenv("DSMATH_SENTENCEPIECE_MODULE")) paths.push_back(env);
  char exe[4096];
  const ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    const std::filesystem::path bin =
        std::filesystem::path(std::string(exe, size_t(n))).parent_path();
    paths.push_back((bin.parent_path() / "lib" / "libdsmath_sentencepiece.so").string());
  }
  paths.push_back(DSMATH_SENTENCEPIECE_MODULE_PATH);
  return paths;
}

LoadFn load_module() {
  static std::once_flag once;
  static LoadFn fn = nullptr;
  static std::string error;
  std::call_once(once, [] {
    for (const std::string& path : module_candidates()) {
      void* handle = dlopen(path.c_str(), kDlopenFlags);
      if (!handle) {
        error += cat("\n  ", dlerror());
        continue;
      }
      fn = reinterpret_cast<LoadFn>(dlsym(handle, "dsmath_load_sentencepiece"));
      if (fn) return;  // the module stays loaded for the life of the process
      error += cat("\n  ", path, ": no dsmath_load_sentencepiece");
    }
  });
  if (!fn) fail("cannot load the sentencepiece module (libdsmath_sentencepiece.so):", error);
  return fn;
}

}  // namespace

std::shared_ptr<const Tokenizer::Impl> load_sentencepiece_tokenizer(
    const std::filesystem::path& file, const Json& config) {
  std::string error;
  const Tokenizer::Impl* impl = load_module()(file.c_str(), config.dump().c_str(), &error);
  if (!impl) throw Error(error);
  return std::shared_ptr<const Tokenizer::Impl>(impl);
}

}  // namespace dsmath
