// The compiler's intermediate form: one operation per ONNX node on activations, before fusion.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "graph/onnx_import.h"
#include "graph/plan.h"
#include "lipsync/status.h"

namespace lipsync::graph {

enum class RawKind { kConv, kBatchNorm, kActivation, kAdd, kConcat, kResize, kPad };

struct RawOp {
  RawKind kind = RawKind::kConv;
  std::vector<std::string> node_names;  // ONNX nodes merged into this op
  std::vector<std::string> inputs;      // activation tensor names
  std::string output;
  ItemShape shape;  // of the output
  ConvParams conv;
  std::vector<float> weight;              // kConv: ONNX layout [Cout][Cin/g][Kh][Kw]
  std::vector<float> bias;                // kConv: [Cout] (zeros when the node had none)
  std::vector<float> bn_scale, bn_shift;  // kBatchNorm: y = x * scale + shift per channel
  ResizeParams resize;                    // kResize; and kConcat once a resize is fused into it
  bool has_resize = false;
  PadParams pad;      // kPad
  Epilogue epilogue;  // kConv, kAdd, kActivation
  bool dead = false;  // merged into another op
};

struct LoweredGraph {
  std::vector<RawOp> ops;  // in a valid execution order
  std::vector<PlanTensor> inputs;
  std::vector<PlanTensor> outputs;          // the model's names; buffer ids unset
  std::vector<std::string> output_tensors;  // activation tensor behind each output
  std::map<std::string, ItemShape> shapes;  // every activation tensor
  std::vector<std::string> notes;           // folds made while lowering
};

// Folds constants and lowers every remaining node, or fails with Unimplemented naming the node.
Result<LoweredGraph> LowerGraph(const OnnxModel& model);

// Merges BN, residual Add, activations into convs and resize (+pad) into concat.
void FuseOps(LoweredGraph* graph);

}  // namespace lipsync::graph
