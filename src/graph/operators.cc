#include "graph/operators.h"

namespace lipsync::graph {

const std::map<std::string, OperatorInfo>& Operators() {
  // {min_inputs, folds, lowers}
  static const std::map<std::string, OperatorInfo> kOperators = {
      {"Identity", {1, true, true}},
      {"Conv", {2, false, true}},
      {"BatchNormalization", {5, false, true}},
      {"Relu", {1, false, true}},
      {"Sigmoid", {1, false, true}},
      {"Add", {2, true, true}},
      {"Sub", {2, true, false}},
      {"Mul", {2, true, false}},
      {"Div", {2, true, false}},
      {"Concat", {1, true, true}},
      {"Resize", {1, false, true}},
      {"Upsample", {1, false, true}},
      {"Pad", {1, false, true}},
      {"Cast", {1, true, true}},
      {"Flatten", {1, false, true}},
      {"Reshape", {2, true, true}},
      {"Shape", {1, true, false}},
      {"Gather", {2, true, false}},
      {"Unsqueeze", {1, true, false}},
      {"Squeeze", {1, true, false}},
      {"Slice", {1, true, false}},
      {"Transpose", {1, true, false}},
      {"Floor", {1, true, false}},
      {"Ceil", {1, true, false}},
      {"Neg", {1, true, false}},
      {"Constant", {0, true, false}},
      {"ConstantOfShape", {1, true, false}}};
  return kOperators;
}

const OperatorInfo* FindOperator(const std::string& op_type) {
  const auto it = Operators().find(op_type);
  return it == Operators().end() ? nullptr : &it->second;
}

}  // namespace lipsync::graph
