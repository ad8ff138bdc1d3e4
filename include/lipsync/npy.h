// Reading and writing tensors in NumPy's .npy format (C order, little-endian).
#pragma once

#include <string>

#include "lipsync/status.h"
#include "lipsync/tensor.h"

namespace lipsync {

// Loads float32, float16, uint8, int32 or int64 arrays. Truncated files, Fortran order, big-endian
// data and other types are errors that name the file and the problem.
Result<Tensor> LoadNpy(const std::string& path);
Status SaveNpy(const std::string& path, const TensorView& tensor);

}  // namespace lipsync
