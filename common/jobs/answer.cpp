#include "common/jobs/answer.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <regex>
#include <vector>

namespace dsmath {
namespace {

std::string trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  std::string out;
  size_t start = 0;
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, start)) {
    out.append(s, start, at - start).append(to);
    start = at + from.size();
  }
  out.append(s, start);
  s = std::move(out);
}

bool starts_with(std::string_view s, std::string_view p) {
  return s.substr(0, p.size()) == p;
}
bool ends_with(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}

// The index just past the '}' matching the '{' at `open`, or npos when unbalanced.
size_t matching_brace(std::string_view s, size_t open) {
  int depth = 0;
  for (size_t i = open; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size() && (s[i + 1] == '{' || s[i + 1] == '}')) {
      ++i;  // an escaped brace does not nest
      continue;
    }
    if (s[i] == '{') ++depth;
    if (s[i] == '}' && --depth == 0) return i + 1;
  }
  return std::string_view::npos;
}

// The argument of the last \boxed / \fbox: "{...}" brace-balanced, or "\boxed X" up to a space
// or '$'.
std::optional<std::string> last_boxed(std::string_view text) {
  size_t at = std::string_view::npos, len = 0;
  for (std::string_view command : {"\\boxed", "\\fbox"}) {
    const size_t found = text.rfind(command);
    if (found != std::string_view::npos && (at == std::string_view::npos || found > at)) {
      at = found;
      len = command.size();
    }
  }
  if (at == std::string_view::npos) return std::nullopt;
  size_t i = at + len;
  if (i < text.size() && text[i] == '{') {
    const size_t end = matching_brace(text, i);
    if (end == std::string_view::npos) return std::nullopt;
    return std::string(text.substr(i + 1, end - i - 2));
  }
  if (i < text.size() && text[i] == ' ') {
    size_t e = ++i;
    while (e < text.size() && text[e] != '$' && !std::isspace(static_cast<unsigned char>(text[e])))
      ++e;
    if (e > i) return std::string(text.substr(i, e - i));
  }
  return std::nullopt;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = char(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Wrappers stripped from one answer at most. Each costs a scan of the rest of the answer, so a
// degenerate output of thousands of nested \text{ would be quadratic; past this many the rest of
// the answer is kept as it is (a real answer has a handful).
constexpr int kMaxWrappers = 64;

// "\text{...}"-style wrappers: the whole answer keeps the content; a wrapper after a number is a
// unit and goes; any other keeps its content.
std::string strip_text_wrappers(std::string a) {
  int budget = kMaxWrappers;
  for (std::string_view command : {"\\text", "\\textbf", "\\mbox", "\\mathrm", "\\textnormal"}) {
    for (size_t at = a.find(std::string(command) + "{"); at != std::string::npos && budget-- > 0;
         at = a.find(std::string(command) + "{", at)) {
      const size_t open = at + command.size();
      const size_t end = matching_brace(a, open);
      if (end == std::string::npos) break;
      const std::string content = a.substr(open + 1, end - open - 2);
      const std::string before = trim(a.substr(0, at));
      const bool unit =
          end == a.size() && !before.empty() &&
          (std::isdigit(static_cast<unsigned char>(before.back())) || before.back() == '}');
      a.replace(at, end - at, unit ? "" : content);
    }
  }
  return a;
}

// Arguments nested deeper than this are taken as they are. Each level of \frac{ costs stack and
// a scan of its argument, and a degenerate model output can nest thousands of them.
constexpr int kMaxNesting = 32;

// \frac12 -> \frac{1}{2}, \frac1b -> \frac{1}{b}, \frac{1}2 -> \frac{1}{2}; \sqrt2 -> \sqrt{2}.
void brace_short_arguments(std::string_view a, std::string& out, int depth) {
  for (size_t i = 0; i < a.size();) {
    const bool frac = a.compare(i, 5, "\\frac") == 0, sqrt = a.compare(i, 5, "\\sqrt") == 0;
    if (!frac && !sqrt) {
      out += a[i++];
      continue;
    }
    out.append(a.substr(i, 5));
    i += 5;
    for (int arg = 0; arg < (frac ? 2 : 1) && i < a.size(); ++arg) {
      if (a[i] == '{') {
        const size_t end = matching_brace(a, i);
        if (end == std::string::npos) break;
        const std::string_view inside = a.substr(i + 1, end - i - 2);
        out += '{';
        if (depth < kMaxNesting)
          brace_short_arguments(inside, out, depth + 1);
        else
          out.append(inside);
        out += '}';
        i = end;
      } else {
        out += '{';
        out += a[i++];
        out += '}';
      }
    }
  }
}

std::string brace_short_arguments(std::string_view a) {
  std::string out;
  brace_short_arguments(a, out, 0);
  return out;
}

struct Number {
  double value;
  bool percent;
};

bool plain_decimal(const std::string& s) {
  static const std::regex pattern(R"([-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)");
  return s.size() <= 64 && std::regex_match(s, pattern);  // longer is not a number we grade
}

std::optional<Number> parse_number(std::string s, int depth = 0) {
  bool percent = false;
  if (ends_with(s, "%")) {
    percent = true;
    s.pop_back();
  }
  if (s.empty()) return std::nullopt;
  if (plain_decimal(s)) return Number{std::strtod(s.c_str(), nullptr), percent};
  // a\times10^{b}
  if (const size_t x = s.find("\\times10^"); x != std::string::npos) {
    std::string exponent = s.substr(x + 9);
    if (starts_with(exponent, "{") && ends_with(exponent, "}"))
      exponent = exponent.substr(1, exponent.size() - 2);
    const std::string mantissa = s.substr(0, x);
    if (plain_decimal(mantissa) && plain_decimal(exponent))
      return Number{std::strtod(mantissa.c_str(), nullptr) *
                        std::pow(10.0, std::strtod(exponent.c_str(), nullptr)),
                    percent};
  }
  // a/b
  if (const size_t slash = s.find('/'); slash != std::string::npos) {
    const std::string n = s.substr(0, slash), d = s.substr(slash + 1);
    if (plain_decimal(n) && plain_decimal(d) && std::strtod(d.c_str(), nullptr) != 0)
      return Number{std::strtod(n.c_str(), nullptr) / std::strtod(d.c_str(), nullptr), percent};
  }
  // [-]\frac{a}{b}
  const bool negative = starts_with(s, "-");
  const std::string f = negative ? s.substr(1) : s;
  if (starts_with(f, "\\frac{") && depth < kMaxNesting) {
    const size_t end1 = matching_brace(f, 5);
    if (end1 != std::string::npos && end1 < f.size() && f[end1] == '{' &&
        matching_brace(f, end1) == f.size()) {
      const auto n = parse_number(f.substr(6, end1 - 7), depth + 1);
      const auto d = parse_number(f.substr(end1 + 1, f.size() - end1 - 2), depth + 1);
      if (n && d && d->value != 0)
        return Number{(negative ? -1 : 1) * n->value / d->value, percent};
    }
  }
  return std::nullopt;
}

bool is_integer(const std::string& s) {
  if (s.empty() || s.size() > 40) return false;
  size_t i = s[0] == '-' || s[0] == '+';
  if (i == s.size()) return false;
  for (; i < s.size(); ++i)
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return false;
  return true;
}

bool close(double a, double b) {
  if (a == b) return true;
  return std::fabs(a - b) <= 1e-6 * std::max(std::fabs(a), std::fabs(b));
}

// Splits "(a,b)" / "[a,b)" contents at top-level commas.
std::vector<std::string> split_top_level(std::string_view s) {
  std::vector<std::string> parts(1);
  int depth = 0;
  for (char c : s) {
    if (c == '(' || c == '[' || c == '{') ++depth;
    if (c == ')' || c == ']' || c == '}') --depth;
    if (c == ',' && depth == 0) {
      parts.emplace_back();
      continue;
    }
    parts.back() += c;
  }
  return parts;
}

bool equal_normalized(const std::string& a, const std::string& b) {
  if (a.empty() || b.empty()) return false;
  if (a == b) return true;
  // An integer matches exactly; other numbers within a relative 1e-6.
  const auto x = parse_number(a), y = parse_number(b);
  if (x && y && !x->percent && !y->percent && (is_integer(a) || is_integer(b))) {
    if (is_integer(a) && is_integer(b))
      return std::strtold(a.c_str(), nullptr) == std::strtold(b.c_str(), nullptr);
    return x->value == y->value;
  }
  if (x && y) {
    if (close(x->value, y->value)) return true;
    if (x->percent || y->percent)
      return close(x->value / 100, y->value) || close(x->value, y->value / 100);
    return false;
  }
  auto bracketed = [](const std::string& s) {
    return s.size() >= 2 && (s.front() == '(' || s.front() == '[') &&
           (s.back() == ')' || s.back() == ']');
  };
  if (bracketed(a) && bracketed(b) && a.front() == b.front() && a.back() == b.back()) {
    const auto pa = split_top_level(std::string_view(a).substr(1, a.size() - 2));
    const auto pb = split_top_level(std::string_view(b).substr(1, b.size() - 2));
    if (pa.size() < 2 || pa.size() != pb.size()) return false;
    for (size_t i = 0; i < pa.size(); ++i)
      if (!equal_normalized(normalize_answer(pa[i]), normalize_answer(pb[i]))) return false;
    return true;
  }
  return false;
}

}  // namespace

std::optional<std::string> extract_answer(std::string_view text) {
  // 1. Minerva: "Final Answer: The final answer is $X$. I hope it is correct."
  if (const size_t at = text.rfind("final answer is $"); at != std::string_view::npos) {
    const size_t start = at + 17;
    const size_t end = text.find("$. I hope", start);
    if (end != std::string_view::npos) return trim(text.substr(start, end - start));
  }
  // 2. \boxed{X}
  if (auto boxed = last_boxed(text)) return trim(*boxed);
  // 3. "The answer is X"
  const std::string low = lower(text);
  if (const size_t at = low.rfind("the answer is"); at != std::string::npos) {
    size_t start = at + 13;
    size_t end = text.find('\n', start);
    std::string answer =
        trim(text.substr(start, end == std::string_view::npos ? end : end - start));
    if (starts_with(answer, ":")) answer = trim(answer.substr(1));
    while (!answer.empty() && (answer.back() == '.' || answer.back() == '$')) answer.pop_back();
    while (!answer.empty() && answer.front() == '$') answer.erase(0, 1);
    answer = trim(answer);
    if (!answer.empty()) return answer;
  }
  // 4. the last number: digits with the commas, points and slash inside it, and a minus sign
  // (a scan rather than a regex: GCC's std::regex recurses once per character matched).
  size_t end = text.size();
  while (end > 0 && !std::isdigit(static_cast<unsigned char>(text[end - 1]))) --end;
  if (end == 0) return std::nullopt;
  auto inside = [](char c) {
    return std::isdigit(static_cast<unsigned char>(c)) || c == ',' || c == '.' || c == '/';
  };
  size_t begin = end;
  while (begin > 0 && inside(text[begin - 1])) --begin;
  while (begin < end && !std::isdigit(static_cast<unsigned char>(text[begin]))) ++begin;
  if (begin > 0 && text[begin - 1] == '-') --begin;
  return std::string(text.substr(begin, end - begin));
}

std::optional<std::string> reference_answer(std::string_view reference) {
  if (const size_t at = reference.rfind("####"); at != std::string_view::npos) {
    std::string answer = trim(reference.substr(at + 4));
    answer.erase(std::remove(answer.begin(), answer.end(), ','), answer.end());
    return answer;
  }
  if (auto boxed = last_boxed(reference)) return trim(*boxed);
  std::string answer = trim(reference);
  if (answer.empty()) return std::nullopt;
  return answer;
}

std::string normalize_answer(std::string_view answer) {
  std::string a = trim(answer);
  // "\boxed{5}" inside a Minerva answer is the 5.
  if (auto boxed = last_boxed(a); boxed && starts_with(a, "\\boxed{") && ends_with(a, "}"))
    a = trim(*boxed);
  // "18 dollars", "5 cm": a number followed by words is the number.
  static const std::regex with_words(R"(([-+]?[0-9][0-9.,/]*)\s+[A-Za-z][A-Za-z .]*)");
  std::smatch m;
  if (a.size() <= 64 && std::regex_match(a, m, with_words)) a = m[1];
  for (std::string_view gone : {"\n", "\\!", "\\left", "\\right", "^{\\circ}", "^\\circ",
                                "\xC2\xB0", "\\$", "$", "\\,", "\\;", "\\ "})
    replace_all(a, gone, "");
  replace_all(a, "\\dfrac", "\\frac");
  replace_all(a, "\\tfrac", "\\frac");
  replace_all(a, "\\%", "%");
  a = strip_text_wrappers(a);
  a.erase(std::remove_if(a.begin(), a.end(), [](unsigned char c) { return std::isspace(c); }),
          a.end());
  while (!a.empty() && a.back() == '.') a.pop_back();
  // "x=5" -> "5" (a short left-hand side names the unknown).
  if (const size_t eq = a.find('='); eq != std::string::npos && eq <= 2 && eq + 1 < a.size() &&
                                     a.find('=', eq + 1) == std::string::npos)
    a = a.substr(eq + 1);
  a = brace_short_arguments(a);
  if (starts_with(a, ".") || starts_with(a, "-.")) {  // .5 -> 0.5
    const size_t dot = a.find('.');
    a = a.substr(0, dot).append("0").append(a.substr(dot));
  }
  static const std::regex thousands(R"(-?\d{1,3}(,\d{3})+(\.\d+)?)");
  if (a.size() <= 64 && std::regex_match(a, thousands))
    a.erase(std::remove(a.begin(), a.end(), ','), a.end());
  // Trailing zeros of a decimal do not matter: 2.50 -> 2.5, 3.0 -> 3.
  static const std::regex decimal(R"(-?\d+\.\d+)");
  if (a.size() <= 64 && std::regex_match(a, decimal)) {
    while (a.back() == '0') a.pop_back();
    if (a.back() == '.') a.pop_back();
  }
  return a;
}

std::string answer_key(std::string_view answer) {
  const std::string a = normalize_answer(answer);
  if (const auto x = parse_number(a); x && !x->percent) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.10g", x->value);
    return buf;
  }
  return a;
}

bool answers_equal(std::string_view predicted, std::string_view reference) {
  return equal_normalized(normalize_answer(predicted), normalize_answer(reference));
}

}  // namespace dsmath
