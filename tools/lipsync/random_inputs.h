// Seeded random model inputs for benchmarks and tests.
#pragma once

#include <cstdint>
#include <vector>

#include "lipsync/engine.h"

namespace lipsync::cli {

// Fills float tensors with uniform values in [0, 1), integer tensors with small values.
void FillRandom(Tensor& tensor, uint64_t seed);

// One tensor per model input with the batch dimension set to `batch`. Fails when an input has a
// dynamic dimension other than the batch.
Result<std::vector<Tensor>> MakeRandomInputs(const ModelInfo& info, int64_t batch, uint64_t seed);

std::vector<TensorView> Views(const std::vector<Tensor>& tensors);

}  // namespace lipsync::cli
