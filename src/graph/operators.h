// The ONNX operators the graph compiler knows, in one table: how many inputs each needs, and
// whether it is evaluated at compile time on constants (const_fold.cc), lowered to a step on
// activations (lower.cc), or both.
#pragma once

#include <cstddef>
#include <map>
#include <string>

namespace lipsync::graph {

struct OperatorInfo {
  size_t min_inputs = 0;  // the leading inputs that must be named; optional ones follow
  bool folds = false;     // evaluated on constants (and Shape on an activation)
  bool lowers = false;    // lowered on run-time activations
};

// Every operator the compiler knows, by ONNX op_type.
const std::map<std::string, OperatorInfo>& Operators();

// The operator's entry, or nullptr for one the compiler does not know.
const OperatorInfo* FindOperator(const std::string& op_type);

}  // namespace lipsync::graph
