// The compiled execution plan: what every native backend (reference CPU, CUDA) executes.
//
// The compiler (graph/compiler.h) turns an ONNX graph into a Plan: a flat list of steps over
// float32 activations in NHWC layout, one weight blob, and one activation arena. Plain structs, no
// virtuals; a backend walks `steps` in order and runs each one.
//
// ## Batch and the arena
// The batch N is a run-time parameter. Every activation buffer holds N items of [H][W][C] floats,
// contiguous, item after item (NHWC). Its place in the arena scales with N:
//     float* buffer_data = arena + buffer.offset * N;      // offset and size are per item
//     element (n, y, x, c) = buffer_data[((n * H + y) * W + x) * C + c]
// The arena needs `arena_floats` * N floats. Buffers whose lifetimes do not overlap share space.
// A buffer is live from the step that writes it (`first_step`, -1 for model inputs, which the
// backend fills before step 0) to its last reader (`last_step`; model outputs live to the end).
// Offsets are multiples of kPlanAlignFloats.
//
// ## Weights
// `weights` is one float blob; a step's weights and bias are at `weight_offset` / `bias_offset`
// (in floats, multiples of kPlanAlignFloats; -1 means none). BatchNormalization is already folded
// into the conv weights and bias. Conv weight layouts by ConvKind:
//   kPointwise  (1x1, stride 1, pad 0, groups 1):     [Cout][Cin]
//   kDepthwise  (groups == Cin == Cout, any KhxKw):    [Kh][Kw][C]
//   kDense      (anything else, groups g >= 1):        [Cout][Kh][Kw][Cin/g]
//               output channel co belongs to group co / (Cout/g) and reads input channels
//               [group*(Cin/g), (group+1)*(Cin/g)).
// Bias: [Cout] (always present for convs after BN folding; zeros when the model had none).
//
// ## Conv semantics (NHWC, dilation 1)
//   out(n,oy,ox,co) = act( sum_{ky,kx,ci} in(n, oy*sy - pad_top + ky, ox*sx - pad_left + kx, ci)
//                          * w(co,ky,kx,ci) + bias(co) + residual(n,oy,ox,co) )
// Input positions outside [0,H)x[0,W) read as zero. `residual` is the buffer inputs[1] when
// epilogue.residual is set (same shape as the output); act is epilogue.activation.
//
// ## Other steps
//   kResizeConcat: inputs[0] (h0,w0,c0) is resized to (resize.out_h, resize.out_w) (bilinear or
//     nearest), placed at (pad_top, pad_left) inside an out_h x out_w canvas of
//     zeros (the Pad of the UNet's Up block; all pads 0 when sizes match), and written to output
//     channels [0, c0). Then inputs[1..] (already out_h x out_w) are copied to the following
//     channels in order. With one input it is a plain resize (+pad).
//     Nearest (ONNX asymmetric + floor): source row = min(floor(y * h0 / out_h), h0 - 1), same
//     for columns. Bilinear: the source row is ONNX's coordinate transformation of y, in float:
//     align_corners y * (h0 - 1) / (out_h - 1) (0 when out_h == 1); half_pixel
//     (y + 0.5) / scale_h - 0.5; pytorch_half_pixel the same, 0 when out_h == 1; asymmetric
//     y / scale_h. It is clamped to [0, h0 - 1] and interpolated between floor and floor + 1
//     (clamped to h0 - 1). scale_h is ONNX's scale: the scales input, else out_h / h0.
//     pad_top/pad_left are >= 0 and the resized image lies inside the canvas.
//   kConcat: inputs concatenated on channels in order.
//   kPad: constant pad of inputs[0] with pad.value (pads may be negative: a crop):
//     out(y, x) = in(y - top, x - left) inside the input, else value.
//   kAdd: out = act(inputs[0] + inputs[1]) elementwise (same shapes).
//   kActivation: out = act(inputs[0]).
//   kCopy: out = inputs[0] (only where a graph output is a model input or aliases another output).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lipsync::graph {

inline constexpr int64_t kPlanAlignFloats = 16;  // 64 bytes

enum class StepKind { kConv, kResizeConcat, kConcat, kPad, kAdd, kActivation, kCopy };
enum class ConvKind { kPointwise, kDepthwise, kDense };
enum class Activation { kNone, kRelu, kSigmoid };
enum class ResizeMode {
  kBilinearAlignCorners,  // PyTorch's bilinear with align_corners=True (SyncTalk_2D's UNet)
  kNearest,
  kBilinearHalfPixel,         // PyTorch's bilinear with align_corners=False, as newer exports write
  kBilinearPytorchHalfPixel,  // the same, as older exports write it
  kBilinearAsymmetric,        // opset 9/10 Upsample and Resize: linear
};

const char* StepKindName(StepKind kind);
const char* ConvKindName(ConvKind kind);
const char* ActivationName(Activation activation);

// Per-item activation shape in NHWC (the batch is not part of it).
struct ItemShape {
  int64_t h = 0, w = 0, c = 0;
  int64_t elements() const { return h * w * c; }
};

struct PlanBuffer {
  std::string name;  // ONNX tensor name
  ItemShape shape;
  int64_t offset = 0;      // floats per item into the arena (x N at run time)
  int64_t size = 0;        // floats per item (= shape.elements())
  int first_step = -1;     // step that writes it; -1: a model input
  int last_step = -1;      // last step that reads it; steps.size() for model outputs
  bool is_input = false;   // a model input
  bool is_output = false;  // a model output
};

struct ConvParams {
  ConvKind kind = ConvKind::kDense;
  int64_t cin = 0, cout = 0;
  int64_t kh = 1, kw = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  int64_t groups = 1;
};

struct ResizeParams {
  ResizeMode mode = ResizeMode::kBilinearAlignCorners;
  int64_t out_h = 0, out_w = 0;          // size of the resized inputs[0] (before padding)
  int64_t pad_top = 0, pad_left = 0;     // where it sits in the step's output canvas
  float scale_h = 1.0f, scale_w = 1.0f;  // ONNX's scale: half_pixel and asymmetric read it
};

struct PadParams {
  int64_t top = 0, left = 0, bottom = 0, right = 0;
  float value = 0.0f;
};

struct Epilogue {
  bool residual = false;  // add inputs[1] before the activation
  Activation activation = Activation::kNone;
};

struct PlanStep {
  StepKind kind = StepKind::kConv;
  std::string name;            // ONNX node names folded into this step, joined by '+'
  std::vector<int> inputs;     // buffer ids
  int output = -1;             // buffer id
  ConvParams conv;             // kConv
  ResizeParams resize;         // kResizeConcat
  PadParams pad;               // kPad
  Epilogue epilogue;           // kConv, kAdd, kActivation
  int64_t weight_offset = -1;  // floats into Plan::weights; -1: none
  int64_t bias_offset = -1;
  int64_t weight_count = 0;
  int64_t macs = 0;  // multiply-accumulates per item
};

// A model input or output in the model's own NCHW layout.
struct PlanTensor {
  std::string name;
  std::vector<int64_t> nchw;  // dim 0 is -1 for a dynamic batch
  int buffer = -1;            // the NHWC buffer that holds it
};

struct Plan {
  std::vector<PlanTensor> inputs;
  std::vector<PlanTensor> outputs;
  std::vector<PlanBuffer> buffers;
  std::vector<PlanStep> steps;
  std::vector<float> weights;
  int64_t arena_floats = 0;  // per item; the arena holds arena_floats * N floats
  int64_t naive_floats = 0;  // per item; sum of all buffer sizes (no reuse)
  int64_t fixed_batch = -1;  // the model's batch when it is not dynamic, else -1
  int64_t opset = 0;
  std::string producer;
  std::vector<std::string> fusions;  // one line per fusion or fold the compiler made
};

}  // namespace lipsync::graph
