#include "random_inputs.h"

#include <random>

namespace lipsync::cli {

void FillRandom(Tensor& tensor, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  const int64_t n = tensor.element_count();
  switch (tensor.dtype()) {
    case DataType::kFloat32:
      for (int64_t i = 0; i < n; ++i) tensor.data_as<float>()[i] = uniform(rng);
      break;
    case DataType::kFloat16:
      for (int64_t i = 0; i < n; ++i) tensor.data_as<uint16_t>()[i] = FloatToHalf(uniform(rng));
      break;
    case DataType::kUInt8:
      for (int64_t i = 0; i < n; ++i) tensor.data_as<uint8_t>()[i] = rng() & 0xff;
      break;
    case DataType::kInt32:
      for (int64_t i = 0; i < n; ++i) tensor.data_as<int32_t>()[i] = rng() % 16;
      break;
    case DataType::kInt64:
      for (int64_t i = 0; i < n; ++i) tensor.data_as<int64_t>()[i] = rng() % 16;
      break;
  }
}

Result<std::vector<Tensor>> MakeRandomInputs(const ModelInfo& info, int64_t batch, uint64_t seed) {
  std::vector<Tensor> inputs;
  for (size_t i = 0; i < info.inputs.size(); ++i) {
    Shape shape = info.inputs[i].shape;
    for (size_t d = 0; d < shape.size(); ++d) {
      if (d == 0 && shape[d] < 0) {
        shape[d] = batch;
      } else if (shape[d] < 0) {
        return Unimplemented("input '" + info.inputs[i].name + "' has a dynamic dimension " +
                             std::to_string(d) + "; give the input explicitly");
      }
    }
    inputs.emplace_back(info.inputs[i].dtype, shape);
    FillRandom(inputs.back(), seed + i * 7919);
  }
  return inputs;
}

std::vector<TensorView> Views(const std::vector<Tensor>& tensors) {
  std::vector<TensorView> views;
  for (const auto& t : tensors) views.push_back(t.view());
  return views;
}

}  // namespace lipsync::cli
