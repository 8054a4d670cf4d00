// UTF-8 helpers and the Unicode character properties that Hugging Face `tokenizers` takes
// from Rust's `char` methods and regex classes (is_whitespace, is_numeric, \w), answered by ICU.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace dsmath::unicode {

// Decodes the code point at s[pos]; `len` receives its byte length. Assumes valid UTF-8.
char32_t decode(std::string_view s, size_t pos, size_t* len);
size_t char_len(std::string_view s, size_t pos);  // byte length of the char at pos
void append(std::string& out, char32_t cp);

bool is_valid_utf8(std::string_view s);
size_t valid_prefix_len(std::string_view s);  // bytes before the first invalid sequence
// Length of the longest prefix of `s` that does not end inside an incomplete (but so far
// valid) multi-byte sequence: what a stream may emit now without splitting a character.
size_t complete_prefix_len(std::string_view s);
// Rust's String::from_utf8_lossy: every maximal invalid subpart becomes one U+FFFD.
std::string to_valid_utf8_lossy(std::string_view s);

bool is_whitespace(char32_t c);  // White_Space property (Rust char::is_whitespace)
bool is_numeric(char32_t c);     // general category Nd, Nl or No (Rust char::is_numeric)
bool is_word_char(char32_t c);   // regex \w: Alphabetic, M, Nd, Pc, Join_Control

enum class NormalForm { kNFC, kNFD, kNFKC, kNFKD };
std::string normalize(std::string_view s, NormalForm form);
std::string to_lower(std::string_view s);

}  // namespace dsmath::unicode
