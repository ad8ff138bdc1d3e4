// Constant evaluation of the shape arithmetic that ONNX exporters emit (Shape, Gather, Concat,
// ...).
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "graph/onnx_import.h"
#include "lipsync/status.h"

namespace lipsync::graph {

// An integer that depends on the run-time batch; arithmetic with it stays unknown.
inline constexpr int64_t kUnknownDim = std::numeric_limits<int64_t>::min();

// What the folder knows about a tensor that is not a constant: its NCHW dims (dim 0 may be
// kUnknownDim), so that Shape() of it folds.
using KnownShapes = std::map<std::string, std::vector<int64_t>>;

// Evaluates `node` whose inputs are all constants in `constants` (or, for Shape, have an entry in
// `shapes`). Returns its outputs in order, or Unimplemented naming the node.
Result<std::vector<OnnxTensor>> FoldNode(const OnnxNode& node,
                                         const std::map<std::string, OnnxTensor>& constants,
                                         const KnownShapes& shapes);

}  // namespace lipsync::graph
