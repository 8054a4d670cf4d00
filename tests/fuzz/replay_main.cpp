// A libFuzzer-compatible driver for the test suite, linked in place of libFuzzer (any compiler,
// no coverage feedback): runs LLVMFuzzerTestOneInput on every file of the given corpus
// directories, then on --runs pseudo-random mutations of them (bit flips, interesting bytes and
// integers, inserted and erased ranges, dictionary tokens, splices; or the target's own
// LLVMFuzzerCustomMutator, for which this file provides LLVMFuzzerMutate), seeded by --seed so
// every run tries the same inputs. A failing input (a signal, an uncaught exception, a sanitizer
// report) is written to crash-<target>-<n> in $DSMATH_FUZZ_ARTIFACTS (default: the current
// directory) before the process dies, so it can be replayed with the libFuzzer binary.
//
//   <target>_fuzz_replay [--runs N] [--seed S] [--dict FILE] [--max-len BYTES]
//                        [--max-seconds T] CORPUS_DIR_OR_FILE...
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
// Defined by targets that mutate their input's structure themselves (json_mutator.h).
extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size,
                                          unsigned int seed) __attribute__((weak));
// Set by the sanitizer runtimes when present: called before a sanitizer ends the process.
extern "C" void __sanitizer_set_death_callback(void (*callback)()) __attribute__((weak));

namespace {

namespace fs = std::filesystem;
using Bytes = std::string;

// The input being run, for the crash handlers (they may only make async-signal-safe calls).
const uint8_t* g_data = nullptr;
size_t g_size = 0;
char g_crash_path[4096];
char g_what[4096];

void save_current_input() {
  static volatile sig_atomic_t saved = 0;
  if (saved || !g_data) return;
  saved = 1;
  const int fd = ::open(g_crash_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd >= 0) {
    for (size_t done = 0; done < g_size;) {
      const ssize_t n = ::write(fd, g_data + done, g_size - done);
      if (n <= 0) break;
      done += size_t(n);
    }
    ::close(fd);
  }
  const char* parts[] = {"\nreplay: FAILED on ", g_what, "; the input is saved as ", g_crash_path,
                         "\n"};
  for (const char* p : parts) {
    if (::write(STDERR_FILENO, p, std::strlen(p)) < 0) break;
  }
}

void on_signal(int sig) {
  save_current_input();
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

Bytes read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// libFuzzer's dictionary format: one token a line, `name="value"` or `"value"`, with \\, \"
// and \xNN escapes; # starts a comment.
std::vector<Bytes> read_dict(const fs::path& p) {
  std::vector<Bytes> tokens;
  std::ifstream in(p);
  std::string line;
  while (std::getline(in, line)) {
    const size_t open = line.find('"');
    const size_t close = line.rfind('"');
    if (line.empty() || line[0] == '#' || open == std::string::npos || close <= open) continue;
    Bytes token;
    for (size_t i = open + 1; i < close; ++i) {
      if (line[i] != '\\' || i + 1 >= close) {
        token += line[i];
      } else if (line[i + 1] == 'x' && i + 3 < close) {
        token += char(std::stoi(line.substr(i + 2, 2), nullptr, 16));
        i += 3;
      } else {
        token += line[++i];
      }
    }
    tokens.push_back(token);
  }
  return tokens;
}

class Mutator {
 public:
  Mutator(uint64_t seed, std::vector<Bytes> dict, size_t max_len)
      : rng_(seed), dict_(std::move(dict)), max_len_(max_len) {}

  Bytes mutate(const std::vector<Bytes>& corpus, Bytes input) {
    const int ops = 1 + int(below(5));
    for (int k = 0; k < ops; ++k) once(corpus, input);
    if (input.size() > max_len_) input.resize(max_len_);
    return input;
  }

  size_t below(size_t n) { return n == 0 ? 0 : size_t(rng_() % n); }

 private:
  void once(const std::vector<Bytes>& corpus, Bytes& s) {
    static const uint8_t kBytes[] = {0,   1,   0x7f, 0x80, 0xff, '"', '{', '}', '[', ']',
                                     ',', ':', '\\', '\n', '0',  '9', '-', '.', '$', ' '};
    static const uint64_t kInts[] = {0,          1,          0x7f,       0x80,
                                     0xff,       0x7fff,     0xffff,     0x7fffffff,
                                     0x80000000, 0xffffffff, 1ull << 32, 0x7fffffffffffffff,
                                     ~0ull};
    static const char* kNumbers[] = {"-1",
                                     "0",
                                     "1e400",
                                     "-1e400",
                                     "4294967296",
                                     "2147483648",
                                     "18446744073709551616",
                                     "9223372036854775807",
                                     "1.5",
                                     "1e-400",
                                     "-9223372036854775808",
                                     "1e19",
                                     "1e300",
                                     "2.5"};
    const size_t at = below(s.size() + 1);
    switch (below(12)) {
      case 0:  // flip a bit
        if (!s.empty()) s[at % s.size()] ^= char(1u << below(8));
        break;
      case 1:  // a random byte
        if (!s.empty()) s[at % s.size()] = char(rng_());
        break;
      case 2:  // an interesting byte
        if (!s.empty()) s[at % s.size()] = char(kBytes[below(sizeof kBytes)]);
        break;
      case 3: {  // insert random bytes
        Bytes r(1 + below(8), '\0');
        for (char& c : r) c = char(rng_());
        s.insert(at, r);
        break;
      }
      case 4:  // erase a range
        if (at < s.size()) s.erase(at, 1 + below(std::min<size_t>(64, s.size() - at)));
        break;
      case 5:  // copy a range elsewhere
        if (!s.empty()) {
          const size_t from = below(s.size());
          const Bytes piece = s.substr(from, 1 + below(std::min<size_t>(64, s.size() - from)));
          s.insert(at, piece);
        }
        break;
      case 6:  // insert a dictionary token
      case 7:  // overwrite with a dictionary token
        if (!dict_.empty()) {
          const Bytes& t = dict_[below(dict_.size())];
          if (below(2) == 0 || at + t.size() > s.size())
            s.insert(at, t);
          else
            s.replace(at, t.size(), t);
        }
        break;
      case 8: {  // splice: this input's head, another's tail
        const Bytes& other = corpus[below(corpus.size())];
        s = s.substr(0, at) + other.substr(below(other.size() + 1));
        break;
      }
      case 9:  // truncate
        s.resize(at);
        break;
      case 10: {  // a little-endian integer of 1, 2, 4 or 8 bytes
        const size_t width = size_t(1) << below(4);
        if (s.size() >= width) {
          const uint64_t v = kInts[below(std::size(kInts))] + below(3) - 1;
          const size_t pos = below(s.size() - width + 1);
          for (size_t b = 0; b < width; ++b) s[pos + b] = char(v >> (8 * b));
        }
        break;
      }
      default: {  // a number as text, over a run of digits or inserted
        const std::string number = kNumbers[below(std::size(kNumbers))];
        size_t end = at;
        while (end < s.size() && (std::isdigit(static_cast<unsigned char>(s[end])) != 0)) ++end;
        s.replace(at, end - at, number);
        break;
      }
    }
  }

  std::mt19937_64 rng_;
  std::vector<Bytes> dict_;
  size_t max_len_;
};

Mutator* g_mutator = nullptr;
const std::vector<Bytes>* g_corpus = nullptr;

// One mutant of `input`: the target's custom mutator when it has one, else ours.
Bytes mutant(const Bytes& input, size_t max_len) {
  if (!LLVMFuzzerCustomMutator) return g_mutator->mutate(*g_corpus, input);
  std::vector<uint8_t> buffer(std::max(max_len, input.size()));
  std::copy(input.begin(), input.end(), buffer.begin());
  const size_t n = LLVMFuzzerCustomMutator(buffer.data(), input.size(), buffer.size(),
                                           unsigned(g_mutator->below(1u << 31)));
  return Bytes(buffer.begin(), buffer.begin() + long(std::min(n, buffer.size())));
}

void run(const Bytes& input, const std::string& what) {
  // An exactly sized copy, so a sanitizer sees any read past the end.
  std::vector<uint8_t> copy(input.begin(), input.end());
  g_data = copy.data();
  g_size = copy.size();
  std::snprintf(g_what, sizeof g_what, "%s", what.c_str());
  LLVMFuzzerTestOneInput(copy.data(), copy.size());
  g_data = nullptr;
}

int usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--runs N] [--seed S] [--dict FILE] [--max-len BYTES] "
               "[--max-seconds T] CORPUS_DIR_OR_FILE...\n",
               argv0);
  return 2;
}

}  // namespace

// libFuzzer's byte mutations, as custom mutators call them.
extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size) {
  const Bytes out = g_mutator->mutate(*g_corpus, Bytes(data, data + size));
  const size_t n = std::min(out.size(), max_size);
  std::copy(out.begin(), out.begin() + long(n), data);
  return n;
}

int main(int argc, char** argv) {
  long runs = 1000;
  uint64_t seed = 1;
  size_t max_len = 1 << 16;
  double max_seconds = 0;  // 0: no limit
  std::vector<Bytes> dict;
  std::vector<fs::path> paths;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--runs" && has_value)
      runs = std::atol(argv[++i]);
    else if (a == "--seed" && has_value)
      seed = std::strtoull(argv[++i], nullptr, 10);
    else if (a == "--dict" && has_value)
      dict = read_dict(argv[++i]);
    else if (a == "--max-len" && has_value)
      max_len = size_t(std::atol(argv[++i]));
    else if (a == "--max-seconds" && has_value)
      max_seconds = std::atof(argv[++i]);
    else if (a.rfind("--", 0) == 0)
      return usage(argv[0]);
    else
      paths.emplace_back(a);
  }
  if (paths.empty()) return usage(argv[0]);

  std::vector<fs::path> files;
  for (const fs::path& p : paths) {
    if (fs::is_directory(p)) {
      for (const auto& e : fs::recursive_directory_iterator(p))
        if (e.is_regular_file()) files.push_back(e.path());
    } else if (fs::is_regular_file(p)) {
      files.push_back(p);
    } else {
      std::fprintf(stderr, "replay: %s does not exist\n", p.c_str());
      return 2;
    }
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) {
    std::fprintf(stderr, "replay: no corpus files\n");
    return 2;
  }

  const char* artifacts = std::getenv("DSMATH_FUZZ_ARTIFACTS");
  const std::string target = fs::path(argv[0]).filename().string();
  for (int sig : {SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL}) std::signal(sig, on_signal);
  if (__sanitizer_set_death_callback) __sanitizer_set_death_callback(save_current_input);

  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  std::vector<Bytes> corpus;
  for (size_t i = 0; i < files.size(); ++i) {
    corpus.push_back(read_file(files[i]));
    std::snprintf(g_crash_path, sizeof g_crash_path, "%s/crash-%s-corpus-%zu",
                  artifacts ? artifacts : ".", target.c_str(), i);
    run(corpus.back(), "corpus file " + files[i].string());
  }

  Mutator mutator(seed, std::move(dict), max_len);
  g_mutator = &mutator;
  g_corpus = &corpus;
  long done = 0;
  Bytes previous = corpus[0];
  for (; done < runs; ++done) {
    if (max_seconds > 0 && elapsed() > max_seconds) break;
    // Mostly a fresh mutation of a corpus file; sometimes a further one of the last mutant.
    const size_t base = mutator.below(corpus.size());
    const Bytes input = mutant(mutator.below(4) == 0 ? previous : corpus[base], max_len);
    std::snprintf(g_crash_path, sizeof g_crash_path, "%s/crash-%s-%ld", artifacts ? artifacts : ".",
                  target.c_str(), done);
    run(input, "mutation " + std::to_string(done) + " (seed " + std::to_string(seed) + ")");
    previous = input;
  }
  std::printf(
      "replay: %zu corpus files and %ld of %ld mutations (seed %llu) in %.1f s: no failure\n",
      files.size(), done, runs, static_cast<unsigned long long>(seed), elapsed());
  return 0;
}
