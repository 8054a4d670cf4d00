#include "coordinator/served_model.h"

#include "common/checkpoint/fingerprint.h"
#include "common/text/prompt.h"

namespace dsmath {

ServedModel ServedModel::load(const std::filesystem::path& dir) {
  ModelConfig config = ModelConfig::load(dir / "config.json");
  GenerationConfig generation = GenerationConfig::load(dir / "generation_config.json", config);
  Tokenizer tokenizer = Tokenizer::load(dir);
  std::filesystem::path name = std::filesystem::weakly_canonical(dir);
  if (!name.has_filename()) name = name.parent_path();
  ServedModel m{name.filename().string(), dir, config, generation, tokenizer, {},
                model_fingerprint(dir)};
  m.eos_token_ids = dsmath::eos_token_ids(m.config, m.generation, m.tokenizer);
  return m;
}

}  // namespace dsmath
