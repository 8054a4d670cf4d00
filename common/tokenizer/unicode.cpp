#include "common/tokenizer/unicode.h"

#include <unicode/bytestream.h>
#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include "common/core/error.h"

namespace dsmath::unicode {

char32_t decode(std::string_view s, size_t pos, size_t* len) {
  const auto b0 = static_cast<unsigned char>(s[pos]);
  if (b0 < 0x80) {
    *len = 1;
    return b0;
  }
  size_t n = b0 >= 0xF0 ? 4 : b0 >= 0xE0 ? 3 : 2;
  if (pos + n > s.size()) n = s.size() - pos;
  char32_t cp = b0 & (0xFF >> (n + 1));
  for (size_t i = 1; i < n; ++i) cp = (cp << 6) | (static_cast<unsigned char>(s[pos + i]) & 0x3F);
  *len = n;
  return cp;
}

size_t char_len(std::string_view s, size_t pos) {
  size_t len = 0;
  decode(s, pos, &len);
  return len;
}

void append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

namespace {

// Number of bytes at s[pos] that form a valid prefix of a UTF-8 sequence (following the
// Unicode "maximal subpart" rules), and the full length the lead byte announces.
void valid_prefix(std::string_view s, size_t pos, size_t* valid, size_t* expected) {
  const auto b0 = static_cast<unsigned char>(s[pos]);
  if (b0 < 0x80) {
    *valid = *expected = 1;
    return;
  }
  unsigned char lo = 0x80, hi = 0xBF;
  size_t n = 0;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    n = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    n = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    n = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    *valid = 0;
    *expected = 1;
    return;
  }
  *expected = n;
  size_t i = 1;
  for (; i < n && pos + i < s.size(); ++i) {
    const auto b = static_cast<unsigned char>(s[pos + i]);
    if (b < lo || b > hi) break;
    lo = 0x80;
    hi = 0xBF;
  }
  *valid = i;
}

}  // namespace

size_t valid_prefix_len(std::string_view s) {
  size_t pos = 0;
  while (pos < s.size()) {
    size_t valid = 0, expected = 0;
    valid_prefix(s, pos, &valid, &expected);
    if (valid != expected) break;
    pos += valid;
  }
  return pos;
}

bool is_valid_utf8(std::string_view s) {
  return valid_prefix_len(s) == s.size();
}

size_t complete_prefix_len(std::string_view s) {
  // Only the last (at most 3) bytes can start a sequence that a later byte completes.
  const size_t start = s.size() > 3 ? s.size() - 3 : 0;
  for (size_t pos = start; pos < s.size(); ++pos) {
    const auto b = static_cast<unsigned char>(s[pos]);
    if ((b & 0xC0) == 0x80) continue;
    size_t valid = 0, expected = 0;
    valid_prefix(s, pos, &valid, &expected);
    if (valid > 0 && valid < expected && pos + valid == s.size()) return pos;
  }
  return s.size();
}

std::string to_valid_utf8_lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t pos = 0; pos < s.size();) {
    size_t valid = 0, expected = 0;
    valid_prefix(s, pos, &valid, &expected);
    if (valid == expected) {
      out.append(s.substr(pos, valid));
      pos += valid;
    } else {
      out.append("\xEF\xBF\xBD");
      pos += valid == 0 ? 1 : valid;
    }
  }
  return out;
}

bool is_whitespace(char32_t c) {
  return u_isUWhiteSpace(static_cast<UChar32>(c));
}

bool is_numeric(char32_t c) {
  const auto type = u_charType(static_cast<UChar32>(c));
  return type == U_DECIMAL_DIGIT_NUMBER || type == U_LETTER_NUMBER || type == U_OTHER_NUMBER;
}

bool is_word_char(char32_t c) {
  const auto ch = static_cast<UChar32>(c);
  const auto mask = U_GET_GC_MASK(ch);
  return u_isUAlphabetic(ch) || (mask & (U_GC_M_MASK | U_GC_ND_MASK | U_GC_PC_MASK)) != 0 ||
         u_hasBinaryProperty(ch, UCHAR_JOIN_CONTROL);
}

std::string normalize(std::string_view s, NormalForm form) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* n = nullptr;
  switch (form) {
    case NormalForm::kNFC:
      n = icu::Normalizer2::getNFCInstance(status);
      break;
    case NormalForm::kNFD:
      n = icu::Normalizer2::getNFDInstance(status);
      break;
    case NormalForm::kNFKC:
      n = icu::Normalizer2::getNFKCInstance(status);
      break;
    case NormalForm::kNFKD:
      n = icu::Normalizer2::getNFKDInstance(status);
      break;
  }
  if (U_FAILURE(status)) fail("ICU normalizer unavailable: ", u_errorName(status));
  std::string out;
  icu::StringByteSink<std::string> sink(&out);
  n->normalizeUTF8(0, icu::StringPiece(s.data(), static_cast<int32_t>(s.size())), sink, nullptr,
                   status);
  if (U_FAILURE(status)) fail("ICU normalization failed: ", u_errorName(status));
  return out;
}

std::string to_lower(std::string_view s) {
  auto u = icu::UnicodeString::fromUTF8(icu::StringPiece(s.data(), static_cast<int32_t>(s.size())));
  u.toLower(icu::Locale::getRoot());
  std::string out;
  u.toUTF8String(out);
  return out;
}

}  // namespace dsmath::unicode
