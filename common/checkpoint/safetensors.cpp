#include "common/checkpoint/safetensors.h"

#include <algorithm>
#include <cstring>

#include "common/checkpoint/tensor_writer.h"
#include "common/core/error.h"
#include "common/core/json_file.h"

namespace dsmath {
namespace {

// The reference implementation refuses headers above 100 MB; a 7B model needs ~30 KB.
constexpr uint64_t kMaxHeaderBytes = 100u << 20;

bool parse_dtype(const std::string& s, DType* t) {
  if (s == "BF16")
    *t = DType::BF16;
  else if (s == "F16")
    *t = DType::F16;
  else if (s == "F32")
    *t = DType::F32;
  else
    return false;
  return true;
}

uint64_t json_u64(const Json& v, const std::string& where) {
  if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0))
    fail(where, " must be a non-negative integer, got ", v.dump());
  return v.get<uint64_t>();
}

}  // namespace

std::vector<TensorInfo> read_safetensors(const MappedFile& file) {
  return read_safetensors(file.bytes(), file.path());
}

std::vector<TensorInfo> read_safetensors(std::span<const std::byte> bytes,
                                         const std::filesystem::path& file) {
  const std::string fname = file.string();
  if (bytes.size() < 8)
    fail(fname, ": truncated safetensors file (", bytes.size(), " bytes, no header length)");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = header_len << 8 | uint64_t(bytes[size_t(i)]);
  if (header_len > kMaxHeaderBytes)
    fail(fname, ": safetensors header length ", header_len, " is absurd (limit ", kMaxHeaderBytes,
         ")");
  if (header_len > bytes.size() - 8)
    fail(fname, ": truncated safetensors file: header claims ", header_len, " bytes but only ",
         bytes.size() - 8, " follow");

  Json header;
  try {
    header = Json::parse(reinterpret_cast<const char*>(bytes.data()) + 8,
                         reinterpret_cast<const char*>(bytes.data()) + 8 + header_len);
  } catch (const Json::exception& e) {
    fail(fname, ": invalid safetensors header JSON: ", e.what());
  }
  if (!header.is_object()) fail(fname, ": safetensors header is not a JSON object");

  const std::byte* data = bytes.data() + 8 + header_len;
  const uint64_t data_len = bytes.size() - 8 - header_len;
  std::vector<TensorInfo> out;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // [begin, end) per tensor, for overlaps
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    const std::string where = fname + ": tensor '" + name + "'";
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
        !entry.contains("data_offsets"))
      fail(where, ": header entry needs dtype, shape and data_offsets");
    TensorInfo t;
    t.name = name;
    t.file = file;
    const Json& dt = entry.at("dtype");
    if (!dt.is_string() || !parse_dtype(dt.get<std::string>(), &t.dtype))
      fail(where, ": unknown or unsupported dtype ", dt.dump(), " (expected BF16, F16 or F32)");
    const Json& shape = entry.at("shape");
    if (!shape.is_array()) fail(where, ": shape must be a list");
    for (const Json& d : shape) t.shape.push_back(int64_t(json_u64(d, where + " shape")));
    const Json& offs = entry.at("data_offsets");
    if (!offs.is_array() || offs.size() != 2) fail(where, ": data_offsets must be [begin, end]");
    uint64_t begin = json_u64(offs[0], where + " data_offsets");
    uint64_t end = json_u64(offs[1], where + " data_offsets");
    if (begin > end || end > data_len)
      fail(where, ": data_offsets [", begin, ", ", end, "] out of range (data is ", data_len,
           " bytes; truncated file?)");
    const int64_t numel = checked_numel(t.shape, where);
    uint64_t expected = 0;
    if (__builtin_mul_overflow(uint64_t(numel), dtype_size(t.dtype), &expected) ||
        expected != end - begin)
      fail(where, ": shape ", shape.dump(), " x ", dtype_name(t.dtype), " needs ",
           uint64_t(numel) * dtype_size(t.dtype), " bytes but data_offsets give ", end - begin);
    t.data = data + begin;
    t.nbytes = size_t(end - begin);
    ranges.emplace_back(begin, end);
    out.push_back(std::move(t));
  }

  // Two tensors sharing bytes would silently alias; the format forbids it.
  std::vector<size_t> order(ranges.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ranges[a] < ranges[b]; });
  size_t widest = 0;  // among the tensors seen so far, the one reaching furthest
  for (size_t k = 0; k < order.size(); ++k) {
    const auto& cur = ranges[order[k]];
    if (k > 0 && cur.second > cur.first && cur.first < ranges[order[widest]].second)
      fail(fname, ": tensor '", out[order[k]].name, "' (bytes ", cur.first, "..", cur.second,
           ") overlaps tensor '", out[order[widest]].name, "' (bytes ", ranges[order[widest]].first,
           "..", ranges[order[widest]].second, ")");
    if (cur.second > ranges[order[widest]].second) widest = k;
  }
  return out;
}

}  // namespace dsmath
