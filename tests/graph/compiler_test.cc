// Graph compiler: importer errors, BatchNorm folding, weight layouts, fusions and buffer planning.
#include "graph/compiler.h"

#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <vector>

#include "graph/buffer_plan.h"
#include "graph/onnx_import.h"
#include "graph/operators.h"
#include "graph_test_util.h"
#include "lipsync/engine.h"

namespace lipsync::graph {
namespace {

using lipsync::testing::GraphModel;

constexpr int32_t kFloat = 1;  // onnx::TensorProto::FLOAT

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

OnnxTensor FloatTensor(const std::string& name, std::vector<int64_t> dims, std::vector<float> v) {
  OnnxTensor t;
  t.name = name;
  t.elem_type = kFloat;
  t.is_float = true;
  t.dims = std::move(dims);
  t.floats = std::move(v);
  return t;
}

OnnxAttribute Ints(const std::string& name, std::vector<int64_t> v) {
  OnnxAttribute a;
  a.name = name;
  a.ints = std::move(v);
  return a;
}

// x [N,cin,h,w] -> Conv(w, b) -> optional BatchNorm -> y
OnnxModel ConvModel(int64_t cin, int64_t h, int64_t w, OnnxTensor weight, int64_t group,
                    std::vector<int64_t> pads, bool with_bn) {
  OnnxModel m;
  m.opset = 17;
  m.inputs.push_back({"x", kFloat, {-1, cin, h, w}});
  const int64_t cout = weight.dims[0];
  m.initializers["w"] = std::move(weight);
  m.initializers["w"].name = "w";
  std::vector<float> bias;
  for (int64_t c = 0; c < cout; ++c) bias.push_back(0.1f * c);
  m.initializers["b"] = FloatTensor("b", {cout}, bias);
  OnnxNode conv;
  conv.name = "conv";
  conv.op_type = "Conv";
  conv.inputs = {"x", "w", "b"};
  conv.outputs = {with_bn ? "c" : "y"};
  conv.attributes["pads"] = Ints("pads", pads);
  conv.attributes["group"].i = group;
  m.nodes.push_back(conv);
  if (with_bn) {
    std::vector<float> g, beta, mean, var;
    for (int64_t c = 0; c < cout; ++c) {
      g.push_back(0.5f + 0.25f * c);
      beta.push_back(-0.1f * c);
      mean.push_back(0.05f * c);
      var.push_back(1.0f + 0.5f * c);
    }
    m.initializers["g"] = FloatTensor("g", {cout}, g);
    m.initializers["beta"] = FloatTensor("beta", {cout}, beta);
    m.initializers["mean"] = FloatTensor("mean", {cout}, mean);
    m.initializers["var"] = FloatTensor("var", {cout}, var);
    OnnxNode bn;
    bn.name = "bn";
    bn.op_type = "BatchNormalization";
    bn.inputs = {"c", "g", "beta", "mean", "var"};
    bn.outputs = {"y"};
    bn.attributes["epsilon"].f = 1e-5f;
    m.nodes.push_back(bn);
  }
  m.outputs.push_back({"y", kFloat, {-1, cout, -1, -1}});
  return m;
}

TEST(OnnxImportTest, MissingFileIsNotFound) {
  auto r = LoadOnnxModel("/nonexistent/model.onnx");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("/nonexistent/model.onnx"), std::string::npos);
}

TEST(OnnxImportTest, GarbageAndEmptyAreDataLoss) {
  auto empty = ParseOnnxModel("", "empty.onnx");
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.status().code(), StatusCode::kDataLoss);
  auto garbage = ParseOnnxModel(std::string(1000, '\xff'), "garbage.onnx");
  ASSERT_FALSE(garbage.ok());
  EXPECT_EQ(garbage.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(garbage.status().message().find("garbage.onnx"), std::string::npos);
}

TEST(OnnxImportTest, EveryTruncationIsRejected) {
  const std::string bytes = ReadFile(GraphModel("conv_kxk.onnx"));
  ASSERT_GT(bytes.size(), 1000u);
  ASSERT_TRUE(ParseOnnxModel(bytes, "whole").ok());
  for (int i = 1; i < 40; ++i) {
    const size_t keep = bytes.size() * i / 40;
    auto r = ParseOnnxModel(bytes.substr(0, keep), "cut");
    ASSERT_FALSE(r.ok()) << "a file cut to " << keep << " bytes parsed";
    EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << r.status().ToString();
  }
  for (size_t cut = 1; cut < 64; ++cut) {  // the tail, byte by byte
    auto r = ParseOnnxModel(bytes.substr(0, bytes.size() - cut), "cut");
    EXPECT_FALSE(r.ok()) << "a file missing its last " << cut << " bytes parsed";
  }
}

TEST(OnnxImportTest, TruncatedFileFailsEngineCreate) {
  const std::string bytes = ReadFile(GraphModel("two_inputs.onnx"));
  const auto path = std::filesystem::temp_directory_path() / "lipsync_graph_truncated.onnx";
  std::ofstream(path, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  EngineOptions options;
  options.backend = "reference";
  auto engine = Engine::Create(path.string(), options);
  std::filesystem::remove(path);
  ASSERT_FALSE(engine.ok());
  EXPECT_EQ(engine.status().code(), StatusCode::kDataLoss) << engine.status().ToString();
}

TEST(CompilerTest, UnsupportedOperatorsNameTheNode) {
  auto softmax = CompilePlanFromFile(GraphModel("softmax.onnx"));
  ASSERT_FALSE(softmax.ok());
  EXPECT_EQ(softmax.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(softmax.status().message().find("'the_softmax' (Softmax)"), std::string::npos)
      << softmax.status().message();

  EngineOptions options;
  options.backend = "reference";
  auto maxpool = Engine::Create(GraphModel("maxpool.onnx"), options);
  ASSERT_FALSE(maxpool.ok());
  EXPECT_EQ(maxpool.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(maxpool.status().message().find("(MaxPool)"), std::string::npos)
      << maxpool.status().message();
}

// Malformed files (found by fuzz/onnx_fuzz.cc): each is refused with a message, never a throw or
// undefined behaviour.
TEST(CompilerTest, NodesMissingInputsOrOutputsAreRefused) {
  const std::vector<float> w(3 * 2, 0.5f);
  OnnxModel m = ConvModel(2, 4, 4, FloatTensor("w", {3, 2, 1, 1}, w), 1, {0, 0, 0, 0}, false);
  m.nodes[0].inputs = {"x"};
  auto r = CompilePlan(m);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("has 1 inputs; Conv needs at least 2"), std::string::npos)
      << r.status().message();

  m = ConvModel(2, 4, 4, FloatTensor("w", {3, 2, 1, 1}, w), 1, {0, 0, 0, 0}, false);
  OnnxNode flat;
  flat.name = "flat";
  flat.op_type = "Flatten";
  flat.outputs = {"f"};
  m.nodes.push_back(flat);
  r = CompilePlan(m);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("has 0 inputs; Flatten needs at least 1"), std::string::npos)
      << r.status().message();

  m = ConvModel(2, 4, 4, FloatTensor("w", {3, 2, 1, 1}, w), 1, {0, 0, 0, 0}, false);
  m.nodes[0].outputs.clear();
  r = CompilePlan(m);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("has no output"), std::string::npos) << r.status().message();
}

TEST(CompilerTest, ConstantCastsNoIntegerHoldsAreRefused) {
  for (float bad : {std::nanf(""), 1e30f, -INFINITY}) {
    const std::vector<float> w(3 * 2, 0.5f);
    OnnxModel m = ConvModel(2, 4, 4, FloatTensor("w", {3, 2, 1, 1}, w), 1, {0, 0, 0, 0}, false);
    m.initializers["v"] = FloatTensor("v", {2}, {1.0f, bad});
    OnnxNode cast;
    cast.name = "cast";
    cast.op_type = "Cast";
    cast.inputs = {"v"};
    cast.outputs = {"vi"};
    cast.attributes["to"].i = 7;  // INT64
    m.nodes.insert(m.nodes.begin(), cast);
    auto r = CompilePlan(m);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find("which no 64-bit integer holds"), std::string::npos)
        << r.status().message();
  }
}

// Graphs ONNX Runtime refuses or computes with another shape are refused here too, rather than
// run to a plausible but different result: negative convolution pads, and an added constant
// [C,1,1,1] whose leading C broadcasts over the batch.
TEST(CompilerTest, GeometriesOnnxRuntimeReadsDifferentlyAreRefused) {
  const std::vector<float> w(2 * 2 * 9, 0.5f);
  auto r =
      CompilePlan(ConvModel(2, 8, 8, FloatTensor("w", {2, 2, 3, 3}, w), 1, {0, -1, 1, 1}, false));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("pads must not be negative"), std::string::npos)
      << r.status().message();

  for (const auto& [dims, ok] :
       std::vector<std::pair<std::vector<int64_t>, bool>>{{{2, 1, 1}, true},
                                                          {{1, 2, 1, 1}, true},
                                                          {{}, true},
                                                          {{1, 1, 1, 1}, true},
                                                          {{2, 1, 1, 1}, false},
                                                          {{2}, false},
                                                          {{1, 1, 1, 2}, false},
                                                          {{1, 1, 1, 1, 1}, false}}) {
    OnnxModel m = ConvModel(2, 4, 4, FloatTensor("w", {2, 2, 3, 3}, w), 1, {1, 1, 1, 1}, false);
    m.nodes[0].outputs = {"c"};
    int64_t count = 1;
    for (int64_t d : dims) count *= d;
    m.initializers["k"] = FloatTensor("k", dims, std::vector<float>(count, 0.25f));
    OnnxNode add;
    add.name = "add";
    add.op_type = "Add";
    add.inputs = {"c", "k"};
    add.outputs = {"y"};
    m.nodes.push_back(add);
    r = CompilePlan(m);
    EXPECT_EQ(r.ok(), ok) << "constant of " << ::testing::PrintToString(dims) << ": "
                          << r.status().ToString();
    if (!ok && !r.ok()) {
      EXPECT_NE(r.status().message().find("only scalar or per-channel"), std::string::npos);
    }
  }
}

// An add takes the activation after it into its epilogue, and only one: Relu then Sigmoid leaves
// the Sigmoid a step of its own (it once replaced the Relu, so the Relu was lost).
TEST(CompilerTest, AnAddTakesOneActivation) {
  OnnxModel m;
  m.opset = 17;
  m.inputs.push_back({"x", kFloat, {-1, 2, 3, 3}});
  const std::vector<std::array<std::string, 4>> nodes = {
      {"add", "Add", "x", "a"}, {"relu", "Relu", "a", "r"}, {"sigmoid", "Sigmoid", "r", "y"}};
  for (const auto& [name, op, in, out] : nodes) {
    OnnxNode n;
    n.name = name;
    n.op_type = op;
    n.inputs = op == "Add" ? std::vector<std::string>{in, in} : std::vector<std::string>{in};
    n.outputs = {out};
    m.nodes.push_back(n);
  }
  m.outputs.push_back({"y", kFloat, {-1, 2, 3, 3}});
  auto r = CompilePlan(m);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->steps.size(), 2u);
  EXPECT_EQ(r->steps[0].kind, StepKind::kAdd);
  EXPECT_EQ(r->steps[0].epilogue.activation, graph::Activation::kRelu);
  EXPECT_EQ(r->steps[1].epilogue.activation, graph::Activation::kSigmoid);
}

// The operator table and the lowering agree: every operator the table lowers reaches its
// lowering on an activation (whatever that then says of the node's attributes), and every one
// it only folds is refused there as constants-only.
TEST(CompilerTest, TheOperatorTableMatchesTheLowering) {
  for (const auto& [op, info] : graph::Operators()) {
    OnnxModel m;
    m.opset = 17;
    m.inputs.push_back({"x", kFloat, {-1, 2, 3, 3}});
    OnnxNode n;
    n.name = "under_test";
    n.op_type = op;
    n.inputs.assign(std::max<size_t>(info.min_inputs, 1), "x");
    n.outputs = {"y"};
    m.nodes.push_back(n);
    m.outputs.push_back({"y", kFloat, {}});
    const Status s = CompilePlan(m).status();
    const std::string& message = s.message();
    EXPECT_EQ(message.find("is not supported by the lipsync graph compiler"), std::string::npos)
        << op << ": " << message;
    // (Shape of an activation folds too: its dims are known at compile time.)
    const bool constants_only = !info.lowers && op != "Shape";
    EXPECT_EQ(message.find("supported only on constants") != std::string::npos, constants_only)
        << op << ": " << message;
  }
}

TEST(OnnxImportTest, ElementCountsSaturateInsteadOfOverflowing) {
  OnnxTensor t;
  t.dims = {int64_t{1} << 40, int64_t{1} << 40};
  EXPECT_EQ(t.element_count(), std::numeric_limits<int64_t>::max());
  t.dims = {3, -1};
  EXPECT_EQ(t.element_count(), -1);
  t.dims = {3, 0, int64_t{1} << 62};
  EXPECT_EQ(t.element_count(), 0);
  t.dims = {2, 3, 4};
  EXPECT_EQ(t.element_count(), 24);
}

TEST(CompilerTest, UnsupportedAttributesNameTheNode) {
  std::vector<float> w(2 * 2 * 9, 0.5f);
  OnnxModel dilated = ConvModel(2, 8, 8, FloatTensor("w", {2, 2, 3, 3}, w), 1, {1, 1, 1, 1}, false);
  dilated.nodes[0].attributes["dilations"] = Ints("dilations", {2, 2});
  auto r = CompilePlan(dilated);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(r.status().message().find("'conv' (Conv)"), std::string::npos);
  EXPECT_NE(r.status().message().find("dilation"), std::string::npos);

  // Resize with cubic interpolation after the conv.
  OnnxModel cubic = ConvModel(2, 8, 8, FloatTensor("w", {2, 2, 3, 3}, w), 1, {1, 1, 1, 1}, false);
  cubic.nodes[0].outputs = {"c"};
  cubic.initializers["scales"] = FloatTensor("scales", {4}, {1, 1, 2, 2});
  OnnxNode resize;
  resize.name = "up";
  resize.op_type = "Resize";
  resize.inputs = {"c", "", "scales"};
  resize.outputs = {"y"};
  resize.attributes["mode"].s = "cubic";
  cubic.nodes.push_back(resize);
  r = CompilePlan(cubic);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(r.status().message().find("'up' (Resize)"), std::string::npos) << r.status().message();

  // The same graph with bilinear align_corners compiles to conv + resize.
  cubic.nodes[1].attributes["mode"].s = "linear";
  cubic.nodes[1].attributes["coordinate_transformation_mode"].s = "align_corners";
  r = CompilePlan(cubic);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->steps.size(), 2u);
  EXPECT_EQ(r->steps[1].kind, StepKind::kResizeConcat);
  EXPECT_EQ(r->buffers[r->steps[1].output].shape.h, 16);

  // Bilinear without align_corners keeps ONNX's scale for its coordinates: 1.5 on 8 rows is 12
  // rows read at (y + 0.5) / 1.5 - 0.5.
  cubic.nodes[1].attributes["coordinate_transformation_mode"].s = "half_pixel";
  cubic.initializers["scales"] = FloatTensor("scales", {4}, {1, 1, 1.5f, 2});
  r = CompilePlan(cubic);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->steps[1].resize.mode, graph::ResizeMode::kBilinearHalfPixel);
  EXPECT_EQ(r->steps[1].resize.out_h, 12);
  EXPECT_EQ(r->steps[1].resize.scale_h, 1.5f);
  EXPECT_EQ(r->steps[1].resize.scale_w, 2.0f);

  // A scale that gives no output size (its conversion to an integer would be undefined).
  for (float bad : {std::nanf(""), -2.0f, 0.0f, 1e30f}) {
    cubic.initializers["scales"] = FloatTensor("scales", {4}, {1, 1, bad, 2});
    r = CompilePlan(cubic);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find("is not in (0, 1024]"), std::string::npos)
        << r.status().message();
  }
}

// The audio encoder's last layer: [N,C,1,1] flattened to [N,C] (Flatten, or Reshape to a
// constant [-1,C]) is the conv's buffer seen as 2-D; anything else flattened is refused.
TEST(CompilerTest, FlattenOfOnePixelPerChannelIsTheSameBuffer) {
  std::vector<float> w(4 * 2 * 9, 0.25f);
  const auto model = [&](int64_t size, const std::string& op) {
    OnnxModel m =
        ConvModel(2, size, size, FloatTensor("w", {4, 2, 3, 3}, w), 1, {0, 0, 0, 0}, false);
    m.nodes[0].outputs = {"c"};
    OnnxNode flat;
    flat.name = "flat";
    flat.op_type = op;
    flat.inputs = {"c"};
    if (op == "Reshape") {
      m.initializers["shape"].name = "shape";
      m.initializers["shape"].dims = {2};
      m.initializers["shape"].ints = {-1, 4 * (size - 2) * (size - 2)};
      flat.inputs.push_back("shape");
    }
    flat.outputs = {"y"};
    m.nodes.push_back(flat);
    m.outputs[0].dims = {-1, 4 * (size - 2) * (size - 2)};
    return m;
  };
  for (const std::string op : {"Flatten", "Reshape"}) {
    auto plan = CompilePlan(model(3, op));
    ASSERT_TRUE(plan.ok()) << op << ": " << plan.status().ToString();
    ASSERT_EQ(plan->steps.size(), 1u) << op;
    ASSERT_EQ(plan->outputs.size(), 1u);
    EXPECT_EQ(plan->outputs[0].nchw, (std::vector<int64_t>{-1, 4})) << op;
    EXPECT_EQ(plan->outputs[0].buffer, plan->steps[0].output) << op;
    // Four pixels per channel: NHWC and NCHW order differ, so it is not the same buffer.
    auto refused = CompilePlan(model(4, op));
    ASSERT_FALSE(refused.ok()) << op;
    EXPECT_EQ(refused.status().code(), StatusCode::kUnimplemented);
    EXPECT_NE(refused.status().message().find("'flat' (" + op + ")"), std::string::npos)
        << refused.status().message();
    EXPECT_NE(refused.status().message().find("2x2 pixels"), std::string::npos)
        << refused.status().message();
  }
  // A flattened tensor read by another operator is refused, not treated as 4-D.
  OnnxModel chained = model(3, "Flatten");
  OnnxNode relu;
  relu.name = "after";
  relu.op_type = "Relu";
  relu.inputs = {"y"};
  relu.outputs = {"z"};
  chained.nodes.push_back(relu);
  chained.outputs[0].name = "z";
  auto r = CompilePlan(chained);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("'after' (Relu)"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("flattened"), std::string::npos) << r.status().message();
}

TEST(CompilerTest, BatchNormFoldsIntoConvWeightsAndBias) {
  // 1x1 conv 2->3 with distinct weights.
  std::vector<float> w = {1, 2, 3, 4, 5, 6};
  OnnxModel m = ConvModel(2, 4, 4, FloatTensor("w", {3, 2, 1, 1}, w), 1, {0, 0, 0, 0}, true);
  auto plan = CompilePlan(m);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  ASSERT_EQ(plan->steps.size(), 1u);
  const PlanStep& s = plan->steps[0];
  EXPECT_EQ(s.kind, StepKind::kConv);
  EXPECT_EQ(s.conv.kind, ConvKind::kPointwise);
  EXPECT_EQ(s.name, "conv+bn");
  for (int co = 0; co < 3; ++co) {
    const double scale = (0.5 + 0.25 * co) / std::sqrt(1.0 + 0.5 * co + 1e-5);
    for (int ci = 0; ci < 2; ++ci) {
      EXPECT_NEAR(plan->weights[s.weight_offset + co * 2 + ci], w[co * 2 + ci] * scale, 1e-6);
    }
    const double bias = (0.1 * co - 0.05 * co) * scale - 0.1 * co;
    EXPECT_NEAR(plan->weights[s.bias_offset + co], bias, 1e-6);
  }
}

TEST(CompilerTest, DenseAndDepthwiseWeightLayouts) {
  // Dense 3x3, 2->2, weight value encodes its ONNX index.
  std::vector<float> w(2 * 2 * 3 * 3);
  for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(i);
  auto dense =
      CompilePlan(ConvModel(2, 5, 5, FloatTensor("w", {2, 2, 3, 3}, w), 1, {1, 1, 1, 1}, false));
  ASSERT_TRUE(dense.ok()) << dense.status().ToString();
  const PlanStep& d = dense->steps.at(0);
  ASSERT_EQ(d.conv.kind, ConvKind::kDense);
  for (int co = 0; co < 2; ++co)
    for (int ci = 0; ci < 2; ++ci)
      for (int ky = 0; ky < 3; ++ky)
        for (int kx = 0; kx < 3; ++kx)
          EXPECT_EQ(dense->weights[d.weight_offset + ((co * 3 + ky) * 3 + kx) * 2 + ci],
                    w[((co * 2 + ci) * 3 + ky) * 3 + kx]);
  // Depthwise 3x3 over 4 channels: [Kh][Kw][C].
  std::vector<float> dw(4 * 9);
  for (size_t i = 0; i < dw.size(); ++i) dw[i] = static_cast<float>(i);
  auto depth =
      CompilePlan(ConvModel(4, 5, 5, FloatTensor("w", {4, 1, 3, 3}, dw), 4, {1, 1, 1, 1}, false));
  ASSERT_TRUE(depth.ok()) << depth.status().ToString();
  const PlanStep& s = depth->steps.at(0);
  ASSERT_EQ(s.conv.kind, ConvKind::kDepthwise);
  for (int c = 0; c < 4; ++c)
    for (int k = 0; k < 9; ++k)
      EXPECT_EQ(depth->weights[s.weight_offset + k * 4 + c], dw[c * 9 + k]);
  EXPECT_EQ(s.weight_offset % kPlanAlignFloats, 0);
  EXPECT_EQ(s.bias_offset % kPlanAlignFloats, 0);
}

TEST(CompilerTest, PadAndShapeArithmeticFoldIntoResizeConcat) {
  auto plan = CompilePlanFromFile(GraphModel("up_pad_concat.onnx"));
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  int resize_concat = 0;
  for (const auto& s : plan->steps) {
    EXPECT_NE(s.kind, StepKind::kPad) << s.name;
    EXPECT_NE(s.kind, StepKind::kActivation) << s.name;
    if (s.kind != StepKind::kResizeConcat) continue;
    ++resize_concat;
    // 17x15 input: conv k3 s2 p0 -> 8x7, x2 -> 16x14, zero padded to the skip's 17x15.
    EXPECT_EQ(plan->buffers[s.output].shape.h, 17);
    EXPECT_EQ(plan->buffers[s.output].shape.w, 15);
    EXPECT_EQ(s.inputs.size(), 2u);
    EXPECT_EQ(s.resize.out_h, 16);
    EXPECT_EQ(s.resize.out_w, 14);
    EXPECT_EQ(s.resize.pad_top, 0);  // dy = 1: top dy/2 = 0, bottom 1
    EXPECT_EQ(s.resize.pad_left, 0);
  }
  EXPECT_EQ(resize_concat, 1) << PlanSummary(*plan);
}

// Independent check of the arena: every step's inputs are alive when it runs and no two buffers
// alive at the same step overlap.
void ExpectSoundBufferPlan(const Plan& plan) {
  ASSERT_TRUE(CheckBufferPlan(plan).ok()) << CheckBufferPlan(plan).ToString();
  const int steps = static_cast<int>(plan.steps.size());
  for (int s = 0; s < steps; ++s) {
    std::vector<int> live;
    for (size_t b = 0; b < plan.buffers.size(); ++b) {
      if (plan.buffers[b].first_step <= s && s <= plan.buffers[b].last_step) live.push_back(b);
    }
    for (int in : plan.steps[s].inputs) {
      EXPECT_LT(plan.buffers[in].first_step, s) << "read before written: " << plan.buffers[in].name;
      EXPECT_GE(plan.buffers[in].last_step, s) << "freed before read: " << plan.buffers[in].name;
    }
    EXPECT_EQ(plan.buffers[plan.steps[s].output].first_step, s);
    for (size_t i = 0; i < live.size(); ++i) {
      for (size_t j = i + 1; j < live.size(); ++j) {
        const PlanBuffer& a = plan.buffers[live[i]];
        const PlanBuffer& b = plan.buffers[live[j]];
        const bool disjoint = a.offset + a.size <= b.offset || b.offset + b.size <= a.offset;
        EXPECT_TRUE(disjoint) << "step " << s << ": '" << a.name << "' and '" << b.name << "'";
      }
    }
  }
  for (const auto& b : plan.buffers) EXPECT_LE(b.offset + b.size, plan.arena_floats);
}

TEST(CompilerTest, BufferPlansOfSmallModelsAreSound) {
  for (const char* name : {"conv_kxk.onnx", "depthwise.onnx", "up_pad_concat.onnx",
                           "two_inputs.onnx", "standalone_ops.onnx", "conv_bn.onnx"}) {
    SCOPED_TRACE(name);
    auto plan = CompilePlanFromFile(GraphModel(name));
    ASSERT_TRUE(plan.ok()) << plan.status().ToString();
    ExpectSoundBufferPlan(*plan);
  }
}

TEST(CompilerTest, DemoModelPlan) {
  auto plan = CompilePlanFromFile(testing::DemoModel());
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  ExpectSoundBufferPlan(*plan);
  int convs = 0, relu = 0, sigmoid = 0, residual = 0, resize_concat = 0, other = 0;
  for (const auto& s : plan->steps) {
    if (s.kind == StepKind::kConv) {
      ++convs;
      relu += s.epilogue.activation == Activation::kRelu;
      sigmoid += s.epilogue.activation == Activation::kSigmoid;
      residual += s.epilogue.residual;
    } else if (s.kind == StepKind::kResizeConcat) {
      ++resize_concat;
    } else if (s.kind != StepKind::kConcat) {
      ++other;
    }
  }
  // The demo graph: 93 convs, 62 ReLUs, 15 residual Adds, 1 Sigmoid, 5 Resize+Concat.
  EXPECT_EQ(convs, 93);
  EXPECT_EQ(relu, 62);
  EXPECT_EQ(residual, 15);
  EXPECT_EQ(sigmoid, 1);
  EXPECT_EQ(resize_concat, 5);
  EXPECT_EQ(other, 0) << "activations and adds should all be conv epilogues";
  EXPECT_LT(plan->arena_floats, plan->naive_floats);
  // No plan can go below the peak of simultaneously live buffers; ours should come close.
  EXPECT_GE(plan->arena_floats, PeakLiveFloats(*plan));
  EXPECT_LE(plan->arena_floats, PeakLiveFloats(*plan) * 5 / 4);
  EXPECT_NEAR(PlanMacs(*plan) / 1e9, 4.89, 0.05);
  std::cout << PlanSummary(*plan, false);
}

}  // namespace
}  // namespace lipsync::graph
