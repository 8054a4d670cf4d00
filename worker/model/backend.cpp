#include "worker/model/backend.h"

#include "common/core/error.h"

namespace dsmath {

const char* device_name(Device device) {
  return device == Device::kCuda ? "cuda" : "cpu";
}

float* Tensor::data() const {
  DSMATH_CHECK(dtype_ == DType::F32, "tensor of ", dtype_name(dtype_), " read as f32");
  return static_cast<float*>(storage_.get());
}

void check_f32_on(const Tensor& t, Device device, const char* op) {
  DSMATH_CHECK(t.device() == device, op, ": tensor is on ", device_name(t.device()),
               ", the backend on ", device_name(device));
  DSMATH_CHECK(t.dtype() == DType::F32, op, ": tensor is ", dtype_name(t.dtype()), ", not f32");
}

void check_token_ids(std::span<const int32_t> token_ids) {
  for (size_t i = 0; i < token_ids.size(); ++i)
    DSMATH_CHECK(token_ids[i] >= 0, "step row ", i, " has token id ", token_ids[i],
                 ": a placeholder for a sampled token that nothing filled");
}

WeightView Backend::place_row_parallel(const WeightView& host, int64_t) {
  return place(host);
}

StackedWeights Backend::place_stacked(std::span<const WeightView> host_parts) {
  StackedWeights placed;
  for (const WeightView& part : host_parts) placed.parts.push_back(place(part));
  return placed;
}

}  // namespace dsmath
