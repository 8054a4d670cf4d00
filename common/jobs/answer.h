// Answer extraction and grading as the DeepSeekMath evaluation does it (their math_utils /
// Minerva / Hendrycks MATH conventions), for batch jobs and `dsmath grade`.
//
//   extract_answer(model output), in order:
//     1. "final answer is $X$. I hope"        (Minerva few-shot form)
//     2. the last brace-balanced \boxed{X} or \fbox{X}  (also "\boxed X")
//     3. "The answer is X"                    (up to the end of the line, trailing period dropped)
//     4. the last number in the text
//   reference_answer(reference): GSM8K's number after "####", else MATH's last \boxed{} of the
//     solution, else the reference itself.
//   normalize_answer: drops \left/\right, \!, spaces, $, "\text{}" wrappers and trailing unit
//     text, degrees, trailing periods, thousands commas, a leading "x =", and writes
//     \dfrac/\tfrac as \frac and \frac12 as \frac{1}{2}.
//   answers_equal: the normalized strings are equal; or both are numbers (integers, decimals,
//     a/b, \frac{a}{b}, percentages, scientific notation) equal within a relative 1e-6 (a
//     percentage also matches its value / 100); or both are tuples / intervals of the same
//     brackets and length whose elements are equal one by one.
// Not covered: symbolic equivalence (2\sqrt{2} vs \sqrt{8}, x+1 vs 1+x, simplified vs
// unsimplified radicals or polynomials), sets written differently, matrices, units conversion.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace dsmath {

std::optional<std::string> extract_answer(std::string_view text);
std::optional<std::string> reference_answer(std::string_view reference);
std::string normalize_answer(std::string_view answer);
bool answers_equal(std::string_view predicted, std::string_view reference);
// What a majority vote counts: the normalized answer, numbers in one spelling (1/2 = 0.5).
std::string answer_key(std::string_view answer);

}  // namespace dsmath
