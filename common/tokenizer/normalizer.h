// tokenizer.json "normalizer": Sequence, NFC, NFD, NFKC, NFKD, Lowercase, Strip, Prepend,
// Replace. Offsets are not tracked: the runtime needs ids, not alignments.
#pragma once

#include <memory>
#include <string>

#include "common/core/json_file.h"

namespace dsmath {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(std::string& text) const = 0;
};

// Returns nullptr for a JSON null. `where` names the file and field for errors.
std::unique_ptr<Normalizer> make_normalizer(const Json& config, const std::string& where);

}  // namespace dsmath
