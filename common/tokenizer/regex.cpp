#include "common/tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cctype>

#include "common/core/error.h"
#include "common/tokenizer/unicode.h"

namespace dsmath {

struct Regex::Code {
  pcre2_code* code = nullptr;
  ~Code() { pcre2_code_free(code); }
};

namespace {

// JIT matching needs more stack than the 32 KiB default on long inputs; one per thread.
struct JitContext {
  pcre2_jit_stack* stack = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, nullptr);
  pcre2_match_context* context = pcre2_match_context_create(nullptr);
  JitContext() { pcre2_jit_stack_assign(context, nullptr, stack); }
  ~JitContext() {
    pcre2_match_context_free(context);
    pcre2_jit_stack_free(stack);
  }
};

pcre2_match_context* match_context() {
  thread_local JitContext ctx;
  return ctx.context;
}

// A backslash before ASCII punctuation always means the literal char in PCRE2.
std::string escape(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (std::ispunct(static_cast<unsigned char>(c))) out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

// Oniguruma's Unicode \s is the White_Space property and \w is Alphabetic, marks, Nd, Pc and
// Join_Control; PCRE2's differ (\s adds U+180E, \w adds No and, before 10.43, lacks marks).
// Rewrites those escapes as explicit classes so both engines split the same way.
constexpr const char* kSpaceClass =
    R"(\t\n\x{0B}\f\r \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000})";
constexpr const char* kWordClass = R"(\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D})";

std::string translate_oniguruma(std::string_view pattern) {
  std::string out;
  bool in_class = false;
  size_t class_start = 0;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[i + 1];
      const bool space = e == 's' || e == 'S', word = e == 'w' || e == 'W';
      if (space || word) {
        const char* body = space ? kSpaceClass : kWordClass;
        const bool negated = e == 'S' || e == 'W';
        if (!in_class) {
          out += negated ? "[^" : "[";
          out += body;
          out += "]";
          ++i;
          continue;
        }
        if (!negated) {  // a negated escape inside a class keeps PCRE2's meaning
          out += body;
          ++i;
          continue;
        }
      }
      out.append(pattern.substr(i, 2));
      ++i;
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      class_start = out.size() + 1;
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') {
        out += "[^";
        ++i;
        class_start = out.size();
      } else {
        out += c;
      }
      continue;
    }
    if (in_class && c == ']' && out.size() > class_start) in_class = false;
    out.push_back(c);
  }
  return out;
}

}  // namespace

Regex::Regex(std::string_view pattern, const std::string& where) : code_(std::make_shared<Code>()) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_compile_context* cc = pcre2_compile_context_create(nullptr);
  pcre2_set_newline(cc, PCRE2_NEWLINE_LF);
  // MULTILINE: Oniguruma's Ruby syntax makes ^ and $ match at every line boundary.
  const std::string translated = translate_oniguruma(pattern);
  code_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                              PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE, &error, &offset, cc);
  pcre2_compile_context_free(cc);
  if (code_->code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    fail(where, ": invalid regex at offset ", offset, ": ", reinterpret_cast<char*>(message));
  }
  pcre2_jit_compile(code_->code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if absent
}

Regex Regex::literal(std::string_view text, const std::string& where) {
  return Regex(escape(text), where);
}

std::vector<std::pair<size_t, size_t>> Regex::find_all(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> out;
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_->code, nullptr);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  bool have_last = false;
  size_t last_end = 0;
  while (pos <= text.size()) {
    const int rc = pcre2_match(code_->code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, md,
                               match_context());
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      pcre2_match_data_free(md);
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof(message));
      fail("regex match failed: ", reinterpret_cast<char*>(message));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t b = ov[0], e = ov[1];
    const size_t step = e < text.size() ? unicode::char_len(text, e) : 1;
    if (b == e && have_last && last_end == e) {
      pos = e + step;
      continue;
    }
    pos = b == e ? e + step : e;
    have_last = true;
    last_end = e;
    out.emplace_back(b, e);
  }
  pcre2_match_data_free(md);
  return out;
}

std::string Regex::replace_all(std::string_view text, std::string_view with) const {
  std::string out;
  size_t prev = 0;
  for (auto [b, e] : find_all(text)) {
    out.append(text.substr(prev, b - prev));
    out.append(with);
    prev = e;
  }
  out.append(text.substr(prev));
  return out;
}

}  // namespace dsmath
