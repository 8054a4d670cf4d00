#include "common/checkpoint/safetensors_writer.h"

#include <set>

#include "common/checkpoint/safetensors.h"
#include "common/core/error.h"
#include "common/core/json_file.h"

namespace dsmath {

void write_safetensors(const std::filesystem::path& path, const std::vector<TensorSpec>& tensors,
                       const TensorFiller& fill) {
  // nlohmann's default object sorts keys; that is fine (the Python writer sorts too), but the
  // data order must follow `tensors`, so offsets are assigned here, not by key order.
  Json header = Json::object();
  header["__metadata__"] = {{"format", "pt"}};
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const TensorSpec& t : tensors) {
    if (!seen.insert(t.name).second) fail(path.string(), ": duplicate tensor '", t.name, "'");
    uint64_t n = t.nbytes();
    header[t.name] = {{"dtype", std::string(dtype_name(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');

  OutFile out(path);
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(uint64_t(text.size()) >> (8 * i));
  out.write(len, 8);
  out.write(text.data(), text.size());
  for (size_t i = 0; i < tensors.size(); ++i) stream_tensor(out, tensors[i], i, fill);
  out.close();
}

}  // namespace dsmath
