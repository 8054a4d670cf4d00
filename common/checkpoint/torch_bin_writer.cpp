#include "common/checkpoint/torch_bin_writer.h"

#include <set>

#include "common/checkpoint/pickle.h"
#include "common/checkpoint/zip.h"
#include "common/core/error.h"

namespace dsmath {

void write_torch_bin(const std::filesystem::path& path, const std::vector<TensorSpec>& tensors,
                     const TensorFiller& fill, bool force_zip64) {
  std::vector<PickledTensor> pickled;
  std::set<std::string> seen;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorSpec& t = tensors[i];
    if (!seen.insert(t.name).second) fail(path.string(), ": duplicate tensor '", t.name, "'");
    PickledTensor p;
    p.name = t.name;
    p.dtype = t.dtype;
    p.storage_key = std::to_string(i);
    p.storage_numel = t.numel();
    p.shape = t.shape;
    p.stride.resize(t.shape.size());
    int64_t s = 1;
    for (size_t d = t.shape.size(); d-- > 0;) {
      p.stride[d] = s;
      s *= t.shape[d];
    }
    pickled.push_back(std::move(p));
  }
  const std::string archive = path.stem().string() + "/";
  ZipWriter zip(path, force_zip64);
  zip.add(archive + "data.pkl", pickle_state_dict(pickled));
  for (size_t i = 0; i < tensors.size(); ++i)
    zip.add_tensor(archive + "data/" + pickled[i].storage_key, tensors[i], i, fill);
  zip.add(archive + "version", "3\n");
  zip.finish();
}

}  // namespace dsmath
