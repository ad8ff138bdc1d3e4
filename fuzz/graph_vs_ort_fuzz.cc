// The graph compiler against ONNX Runtime: the bytes choose a small model of the operators the
// compiler lowers (convolutions of any geometry, batch norm, activations, adds, concatenations,
// resizes, pads, casts, the shape arithmetic exporters write for a resize, and the UNet's blocks,
// upsample-concatenations and second input), with random weights. Where the compiler refuses it,
// the refusal must be short and not internal; where it accepts it, ONNX Runtime must accept it
// too, and the native backend's outputs must match ONNX Runtime's on random inputs at batches 1
// and 2. The native backend is the reference one, or the CUDA backend where this file is built
// against the CPU device (LIPSYNC_FUZZ_CUDA_ON_CPU). A model the plan computes differently from
// ONNX Runtime would give users wrong frames without an error, the worst failure there is.
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "fuzz_check.h"
#include "fuzz_input.h"
#include "lipsync/engine.h"

namespace lipsync::fuzz {
namespace {

struct Activation {
  std::string name;
  int64_t c, h, w;
};

class ModelMaker {
 public:
  ModelMaker(Choices& pick, uint32_t seed) : pick_(pick), rng_(seed), seed_(seed) {
    model_.set_ir_version(7);
    model_.set_producer_name("graph_vs_ort_fuzz");
    opset_ = pick_.Of({9, 10, 11, 13, 17});
    auto* import = model_.add_opset_import();
    import->set_domain("");
    import->set_version(opset_);
    graph_ = model_.mutable_graph();
    graph_->set_name("fuzz");
  }

  // The whole model: one input or two, up to eight choices of operator (a block is several
  // operators), one output or two.
  onnx::ModelProto Make() {
    const Activation x{"x", pick_.Pick(1, 8), pick_.Pick(1, 12), pick_.Pick(1, 12)};
    fixed_batch_ = pick_.OneIn(8) ? 2 : 0;
    Declare(graph_->add_input(), x.name, {fixed_batch_ ? fixed_batch_ : -1, x.c, x.h, x.w});
    acts_.push_back(x);
    // A third of the models take a second input, as the UNet takes audio beside the face (the
    // CUDA backend may run what reads only it on a side stream). Drawn from the seed, so that
    // the bytes keep their meaning.
    std::mt19937 shape_rng(seed_ ^ 0x9e3779b9u);
    if (shape_rng() % 3 == 0) {
      const bool half = shape_rng() % 2 == 0 && x.h > 1 && x.w > 1;
      const Activation a{"a", 1 + static_cast<int64_t>(shape_rng() % 8), half ? x.h / 2 : x.h,
                         half ? x.w / 2 : x.w};
      Declare(graph_->add_input(), a.name, {fixed_batch_ ? fixed_batch_ : -1, a.c, a.h, a.w});
      acts_.push_back(a);
      if (shape_rng() % 2 == 0) AudioBranch(x, a, 1 + static_cast<int>(shape_rng() % 3));
    }
    const int nodes = pick_.Pick(1, 8);
    for (int i = 0; i < nodes && !pick_.done(); ++i) AddOperator();
    if (acts_.size() == 1) AddOperator(0);  // a graph of no operators says nothing
    const Activation& last = acts_.back();
    std::string output = last.name;
    if (last.h == 1 && last.w == 1 && pick_.OneIn(4)) {
      output = Fresh("flat");
      Node("Flatten", {last.name}, output);
    }
    const int64_t batch = fixed_batch_ ? fixed_batch_ : -1;
    // Outputs without shapes, one model in eight: where ONNX Runtime cannot infer them either,
    // its engine refuses the model (the reference one runs it).
    shapes_ = !pick_.OneIn(8);
    Declare(graph_->add_output(), output,
            !shapes_              ? std::vector<int64_t>{}
            : output == last.name ? std::vector<int64_t>{batch, last.c, last.h, last.w}
                                  : std::vector<int64_t>{batch, last.c});
    if (acts_.size() > 2 && pick_.OneIn(4)) {
      const Activation& other = acts_[pick_.Pick(1, static_cast<int>(acts_.size()) - 2)];
      Declare(graph_->add_output(), other.name,
              shapes_ ? std::vector<int64_t>{batch, other.c, other.h, other.w}
                      : std::vector<int64_t>{});
    }
    return model_;
  }

  int64_t fixed_batch() const { return fixed_batch_; }
  int opset() const { return opset_; }
  bool output_shapes() const { return shapes_; }

 private:
  void AddOperator(int choice = -1) {
    if (choice < 0) choice = pick_.Pick(0, 9);
    const Activation x = acts_[pick_.Pick(0, static_cast<int>(acts_.size()) - 1)];
    switch (choice) {
      case 0:
        return Conv(x);
      case 1:
        return BatchNorm(x);
      case 2:
        return Push(x, Node(pick_.Of({"Relu", "Sigmoid"}), {x.name}, Fresh("act")));
      case 3:
        return Add(x);
      case 4:
        return Concat(x);
      case 5:
        return Resize(x);
      case 6:
        return Pad(x);
      case 8:
      case 9:
        return UpConcatBlock(x);
      default: {  // 7
        onnx::NodeProto* n = Node(pick_.Of({"Identity", "Cast"}), {x.name}, Fresh("same"));
        if (n->op_type() == "Cast") AttrInt(n, "to", onnx::TensorProto::FLOAT);
        return Push(x, n);
      }
    }
  }

  void Conv(const Activation& x) {
    int64_t cout = pick_.Pick(1, 8), group = 1;
    switch (pick_.Pick(0, 2)) {
      case 0:
        break;
      case 1:
        group = x.c, cout = x.c * pick_.Pick(1, 2);
        break;  // depthwise (or multiplier 2)
      default:
        group = pick_.Pick(1, static_cast<int>(x.c));
        if (x.c % group) group = 1;
        cout = group * pick_.Pick(1, 3);
    }
    const int64_t kh = pick_.Pick(1, 5), kw = pick_.OneIn(2) ? kh : pick_.Pick(1, 5);
    const int64_t sh = pick_.Pick(1, 3), sw = pick_.OneIn(2) ? sh : pick_.Pick(1, 3);
    std::vector<int64_t> pads(4);
    for (auto& p : pads) p = pick_.OneIn(16) ? -1 : pick_.Pick(0, 3);
    const bool valid = pick_.OneIn(8);
    if (valid) pads.assign(4, 0);
    Activation y{Fresh("conv"), cout, (x.h + pads[0] + pads[2] - kh) / sh + 1,
                 (x.w + pads[1] + pads[3] - kw) / sw + 1};
    if (y.h <= 0 || y.w <= 0) return;
    std::vector<std::string> inputs = {
        x.name,
        Floats({cout, x.c / group, kh, kw}, 1.0f / std::sqrt(float(x.c / group * kh * kw)))};
    if (pick_.OneIn(2)) inputs.push_back(Floats({cout}, 0.5f));
    onnx::NodeProto* n = Node("Conv", inputs, y.name);
    if (group != 1 || pick_.OneIn(4)) AttrInt(n, "group", group);
    if (pick_.OneIn(2)) AttrInts(n, "kernel_shape", {kh, kw});
    if (sh != 1 || sw != 1 || pick_.OneIn(4)) AttrInts(n, "strides", {sh, sw});
    if (pick_.OneIn(4)) AttrInts(n, "dilations", {1, 1});
    if (valid) {
      AttrString(n, "auto_pad", "VALID");
    } else if (std::any_of(pads.begin(), pads.end(), [](int64_t p) { return p != 0; }) ||
               pick_.OneIn(4)) {
      AttrInts(n, "pads", pads);
    }
    acts_.push_back(y);
  }

  // What the UNet is made of, so that the CUDA backend's fused kernels meet it: inverted-residual
  // blocks (expand 1x1, depthwise 3x3, project 1x1, each maybe with its batch norm; a residual
  // add where the shapes allow; maybe a 1x1 convolution after), and a bilinear x2 upsample
  // concatenated with a skip of twice the size before a block, as the decoder does.
  void UpConcatBlock(const Activation& x) {
    if (opset_ >= 11 && x.h % 2 == 0 && x.w % 2 == 0 && pick_.OneIn(2)) {
      Block(UpConcat(Block(x, 2), x), 1);  // down and up again, the skip beside
      return;
    }
    for (const auto& skip : std::vector<Activation>(acts_)) {
      if (opset_ >= 11 && skip.h == 2 * x.h && skip.w == 2 * x.w && pick_.OneIn(2)) {
        Block(UpConcat(x, skip), 1);
        return;
      }
    }
    Block(x, pick_.OneIn(3) ? 2 : 1);
  }

  // As the UNet: a few layers on each input alone (the visual encoder, the audio branch), then
  // the two joined by a concatenation (the audio upsampled x2 first where it is half the size).
  // Nothing after the join reads the audio branch, so that it can run on a side stream.
  void AudioBranch(Activation x, Activation a, int layers) {
    const size_t first = acts_.size() - 1;  // `a` itself
    for (int i = 0; i < layers; ++i) {
      a = pick_.OneIn(2) ? Pointwise(a, pick_.Pick(1, 16), true) : Block(a, 1);
    }
    std::vector<Activation> branch(acts_.begin() + static_cast<std::ptrdiff_t>(first), acts_.end());
    acts_.resize(first);
    for (int i = 0; i < layers; ++i) {
      x = pick_.OneIn(2) ? Pointwise(x, pick_.Pick(1, 16), true) : Block(x, 1);
    }
    if (a.h == x.h && a.w == x.w) {
      onnx::NodeProto* cat = Node("Concat", {x.name, a.name}, Fresh("cat"));
      AttrInt(cat, "axis", 1);
      acts_.push_back({cat->output(0), x.c + a.c, x.h, x.w});
    } else if (opset_ >= 11 && 2 * a.h == x.h && 2 * a.w == x.w) {
      UpConcat(a, x);
    } else {
      acts_.insert(acts_.end(), branch.begin(), branch.end());  // not joined: left to the rest
    }
  }

  // Resize x2 (linear, align_corners as SyncTalk_2D's UNet or half-pixel as PyTorch's default,
  // drawn from the seed so that the bytes keep their meaning; the roi input and these modes came
  // with opset 11), then the concatenation with `skip` in either order.
  Activation UpConcat(const Activation& x, const Activation& skip) {
    onnx::NodeProto* up = Node("Resize", {x.name, "", Values({1, 1, 2, 2})}, Fresh("up"));
    AttrString(up, "mode", "linear");
    AttrString(up, "coordinate_transformation_mode",
               std::array<const char*, 4>{"align_corners", "align_corners", "half_pixel",
                                          "pytorch_half_pixel"}[up_rng_() % 4]);
    if (opset_ < 13) up->set_input(1, Values({}));
    const bool skip_first = pick_.OneIn(2);
    onnx::NodeProto* cat = Node(
        "Concat", {skip_first ? skip.name : up->output(0), skip_first ? up->output(0) : skip.name},
        Fresh("cat"));
    AttrInt(cat, "axis", 1);
    acts_.push_back({cat->output(0), x.c + skip.c, skip.h, skip.w});
    return acts_.back();
  }

  Activation Block(const Activation& x, int64_t stride) {
    const int64_t hidden = pick_.Of<int64_t>({8, 16, 24, 32, 48, 64, 96, 128});
    const int64_t cout = pick_.OneIn(2) ? x.c : pick_.Of<int64_t>({4, 8, 16, 32});
    const Activation e = Pointwise(x, hidden, true);
    const Activation d{Fresh("dw"), hidden, (e.h - 1) / stride + 1, (e.w - 1) / stride + 1};
    onnx::NodeProto* n = Node(
        "Conv", {e.name, Floats({hidden, 1, 3, 3}, 1.0f / 3.0f), Floats({hidden}, 0.2f)}, d.name);
    AttrInt(n, "group", hidden);
    AttrInts(n, "strides", {stride, stride});
    AttrInts(n, "pads", {1, 1, 1, 1});
    acts_.push_back(d);
    if (pick_.OneIn(2)) BatchNorm(d);
    Push(acts_.back(), Node("Relu", {acts_.back().name}, Fresh("act")));
    Activation y = Pointwise(acts_.back(), cout, false);
    if (stride == 1 && cout == x.c && pick_.OneIn(2)) {
      Push(y, Node("Add", {x.name, y.name}, Fresh("res")));
      y = acts_.back();
    }
    if (pick_.OneIn(3)) y = Pointwise(y, pick_.Pick(1, 8), false);
    return y;
  }

  // A 1x1 convolution, maybe with its batch norm and a ReLU; returns the last activation.
  Activation Pointwise(const Activation& x, int64_t cout, bool relu) {
    const Activation y{Fresh("pw"), cout, x.h, x.w};
    Node("Conv", {x.name, Floats({cout, x.c, 1, 1}, 1.0f / std::sqrt(float(x.c)))}, y.name);
    acts_.push_back(y);
    if (pick_.OneIn(2)) BatchNorm(y);
    if (relu) Push(acts_.back(), Node("Relu", {acts_.back().name}, Fresh("act")));
    return acts_.back();
  }

  void BatchNorm(const Activation& x) {
    std::vector<std::string> inputs = {x.name, Floats({x.c}, 1.0f, 0.5f), Floats({x.c}, 0.5f),
                                       Floats({x.c}, 0.3f), Floats({x.c}, 0.75f, 1.25f)};
    onnx::NodeProto* n = Node("BatchNormalization", inputs, Fresh("bn"));
    if (pick_.OneIn(2)) AttrFloat(n, "epsilon", pick_.Of({1e-5f, 1e-3f, 0.1f}));
    Push(x, n);
  }

  void Add(const Activation& x) {
    std::vector<const Activation*> same;
    for (const auto& a : acts_) {
      if (a.c == x.c && a.h == x.h && a.w == x.w) same.push_back(&a);
    }
    std::string other;
    if (pick_.OneIn(2)) {
      other = same[pick_.Pick(0, static_cast<int>(same.size()) - 1)]->name;
    } else {
      switch (pick_.Pick(0, 4)) {
        case 0:
          other = Floats({}, 1.0f);
          break;
        case 1:
          other = Floats({1}, 1.0f);
          break;
        case 2:
          other = Floats({x.c, 1, 1}, 1.0f);
          break;
        case 3:
          other = Floats({1, x.c, 1, 1}, 1.0f);
          break;
        default:
          other = Floats({x.c, 1, 1, 1}, 1.0f);  // broadcasts over the batch instead
      }
    }
    const bool swap = pick_.OneIn(2);
    Push(x, Node("Add", {swap ? other : x.name, swap ? x.name : other}, Fresh("add")));
  }

  void Concat(const Activation& x) {
    std::vector<std::string> inputs = {x.name};
    int64_t c = x.c;
    for (const auto& a : acts_) {
      if (a.h == x.h && a.w == x.w && pick_.OneIn(2) && inputs.size() < 4) {
        inputs.push_back(a.name);
        c += a.c;
      }
    }
    onnx::NodeProto* n = Node("Concat", inputs, Fresh("cat"));
    AttrInt(n, "axis", pick_.Of({1, -3}));
    acts_.push_back({n->output(0), c, x.h, x.w});
  }

  void Resize(const Activation& x) {
    const float scale_h = pick_.Of({1.0f, 2.0f, 3.0f, 0.5f, 1.5f});
    const float scale_w = pick_.OneIn(2) ? scale_h : pick_.Of({1.0f, 2.0f, 0.5f});
    const bool by_sizes = opset_ >= 11 && pick_.OneIn(2);
    Activation y{Fresh("resize"), x.c, static_cast<int64_t>(std::floor(x.h * scale_h)),
                 static_cast<int64_t>(std::floor(x.w * scale_w))};
    if (y.h <= 0 || y.w <= 0) return;
    const std::string mode = pick_.Of<const char*>({"nearest", "linear"});
    onnx::NodeProto* n;
    if (opset_ < 11) {
      if (opset_ == 9 && (scale_h < 1 || scale_w < 1)) return;  // Upsample only enlarges
      n = Node(opset_ == 9 ? "Upsample" : "Resize", {x.name, Values({1, 1, scale_h, scale_w})},
               y.name);
    } else {
      const std::string none = opset_ >= 13 ? "" : Values({});
      std::vector<std::string> inputs = {x.name, none};
      if (by_sizes) {
        inputs.push_back(none);
        inputs.push_back(SizesFromShape(x.name, y.h, y.w));
      } else {
        inputs.push_back(Values({1, 1, scale_h, scale_w}));
      }
      n = Node("Resize", inputs, y.name);
      AttrString(n, "coordinate_transformation_mode",
                 pick_.Of<const char*>(
                     {"align_corners", "asymmetric", "half_pixel", "pytorch_half_pixel"}));
      if (pick_.OneIn(2)) {
        AttrString(n, "nearest_mode",
                   pick_.Of<const char*>({"floor", "round_prefer_floor", "ceil"}));
      }
    }
    AttrString(n, "mode", mode);
    acts_.push_back(y);
  }

  // sizes = Concat(Shape(x)[0:2], [h, w]), as exporters compute an upsample's output size.
  std::string SizesFromShape(const std::string& x, int64_t h, int64_t w) {
    const std::string shape = Node("Shape", {x}, Fresh("shape"))->output(0);
    const std::string head =
        Node("Slice", {shape, Ints({0}), Ints({2}), Ints({0})}, Fresh("nc"))->output(0);
    onnx::NodeProto* n = Node("Concat", {head, Ints({h, w})}, Fresh("sizes"));
    AttrInt(n, "axis", 0);
    return n->output(0);
  }

  void Pad(const Activation& x) {
    std::vector<int64_t> pads(8, 0);
    for (int i : {2, 3, 6, 7}) pads[i] = pick_.Pick(-2, 3);
    if (pick_.OneIn(16)) pads[1] = 1;  // the channels: refused
    Activation y{Fresh("pad"), x.c + pads[1], x.h + pads[2] + pads[6], x.w + pads[3] + pads[7]};
    if (y.h <= 0 || y.w <= 0) return;
    const float value = pick_.OneIn(2) ? 0.0f : 0.25f;
    onnx::NodeProto* n;
    if (opset_ < 11) {
      n = Node("Pad", {x.name}, y.name);
      AttrInts(n, "pads", pads);
      if (value != 0.0f || pick_.OneIn(2)) AttrFloat(n, "value", value);
    } else {
      std::vector<std::string> inputs = {x.name, Ints(pads)};
      if (value != 0.0f || pick_.OneIn(2)) inputs.push_back(Values({value}, /*scalar=*/true));
      n = Node("Pad", inputs, y.name);
    }
    if (pick_.OneIn(8)) AttrString(n, "mode", pick_.Of<const char*>({"reflect", "edge"}));
    acts_.push_back(y);
  }

  void Push(const Activation& x, onnx::NodeProto* n) {
    acts_.push_back({n->output(0), x.c, x.h, x.w});
  }

  std::string Fresh(const char* prefix) { return prefix + std::to_string(++count_); }

  onnx::NodeProto* Node(const std::string& op, const std::vector<std::string>& inputs,
                        const std::string& output) {
    onnx::NodeProto* n = graph_->add_node();
    n->set_op_type(op);
    n->set_name(op + std::to_string(graph_->node_size()));
    for (const auto& in : inputs) n->add_input(in);
    n->add_output(output);
    return n;
  }

  // A float initializer of random values, uniform in [centre - spread, centre + spread].
  std::string Floats(const std::vector<int64_t>& dims, float spread, float centre = 0.0f) {
    onnx::TensorProto* t = Initializer(onnx::TensorProto::FLOAT, "w");
    int64_t count = 1;
    for (int64_t d : dims) t->add_dims(d), count *= d;
    std::uniform_real_distribution<float> dist(centre - spread, centre + spread);
    for (int64_t i = 0; i < count; ++i) t->add_float_data(dist(rng_));
    return t->name();
  }

  // A 1-D float initializer of these values (a 0-D one of one value if `scalar`).
  std::string Values(const std::vector<float>& values, bool scalar = false) {
    onnx::TensorProto* t = Initializer(onnx::TensorProto::FLOAT, "v");
    if (!scalar) t->add_dims(static_cast<int64_t>(values.size()));
    for (float v : values) t->add_float_data(v);
    return t->name();
  }

  std::string Ints(const std::vector<int64_t>& values) {
    onnx::TensorProto* t = Initializer(onnx::TensorProto::INT64, "i");
    t->add_dims(static_cast<int64_t>(values.size()));
    for (int64_t v : values) t->add_int64_data(v);
    return t->name();
  }

  onnx::TensorProto* Initializer(int32_t type, const char* prefix) {
    onnx::TensorProto* t = graph_->add_initializer();
    t->set_name(Fresh(prefix));
    t->set_data_type(type);
    return t;
  }

  static void Declare(onnx::ValueInfoProto* v, const std::string& name,
                      const std::vector<int64_t>& dims) {
    v->set_name(name);
    auto* type = v->mutable_type()->mutable_tensor_type();
    type->set_elem_type(onnx::TensorProto::FLOAT);
    if (dims.empty()) return;
    for (int64_t d : dims) {
      auto* dim = type->mutable_shape()->add_dim();
      if (d < 0) {
        dim->set_dim_param("batch");
      } else {
        dim->set_dim_value(d);
      }
    }
  }

  static onnx::AttributeProto* Attr(onnx::NodeProto* n, const char* name,
                                    onnx::AttributeProto::AttributeType type) {
    onnx::AttributeProto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(type);
    return a;
  }
  static void AttrInt(onnx::NodeProto* n, const char* name, int64_t v) {
    Attr(n, name, onnx::AttributeProto::INT)->set_i(v);
  }
  static void AttrFloat(onnx::NodeProto* n, const char* name, float v) {
    Attr(n, name, onnx::AttributeProto::FLOAT)->set_f(v);
  }
  static void AttrString(onnx::NodeProto* n, const char* name, const std::string& v) {
    Attr(n, name, onnx::AttributeProto::STRING)->set_s(v);
  }
  static void AttrInts(onnx::NodeProto* n, const char* name, const std::vector<int64_t>& v) {
    onnx::AttributeProto* a = Attr(n, name, onnx::AttributeProto::INTS);
    for (int64_t i : v) a->add_ints(i);
  }

  Choices& pick_;
  std::mt19937 rng_;
  uint32_t seed_;
  std::mt19937 up_rng_{seed_ ^ 0x85ebca6bu};
  onnx::ModelProto model_;
  onnx::GraphProto* graph_ = nullptr;
  int opset_ = 13;
  int64_t fixed_batch_ = 0;
  bool shapes_ = true;
  int count_ = 0;
  std::vector<Activation> acts_;
};

// The model stays at `path` for a look at what broke.
[[noreturn]] void ModelBroken(const char* what, const std::string& detail,
                              const std::string& path) {
  fuzz::Broken("graph_vs_ort", std::string(what)
                                   .append(": ")
                                   .append(detail.substr(0, 600))
                                   .append("\n(the model is ")
                                   .append(path)
                                   .append(")"));
}

// Whether ONNX Runtime ran the batch (and so the outputs were compared); `*worst` keeps the
// largest difference seen as a share of the tolerance.
bool Compare(Engine& ort, Engine& ref, int64_t batch, uint32_t seed, float tolerance,
             const std::string& path, float* worst) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<Tensor> inputs;
  std::vector<TensorView> views;
  for (const auto& info : ort.info().inputs) {
    Shape shape = info.shape;
    if (shape[0] < 0) shape[0] = batch;
    Tensor& t = inputs.emplace_back(DataType::kFloat32, shape);
    for (int64_t i = 0; i < t.element_count(); ++i) t.data_as<float>()[i] = dist(rng);
    views.push_back(t.view());
  }
  auto expected = ort.Run(views);
  if (!expected.ok()) return false;  // ONNX Runtime cannot run it either: nothing to compare
  auto actual = ref.Run(views);
  if (!actual.ok())
    ModelBroken("the native backend refused a run", actual.status().ToString(), path);
  if (expected->size() != actual->size()) ModelBroken("output counts differ", "", path);
  for (size_t o = 0; o < expected->size(); ++o) {
    const Tensor& a = (*expected)[o];
    const Tensor& b = (*actual)[o];
    if (a.shape() != b.shape()) {
      ModelBroken("output shapes differ",
                  ShapeToString(a.shape()) + " vs " + ShapeToString(b.shape()), path);
    }
    for (int64_t i = 0; i < a.element_count(); ++i) {
      const float x = a.data_as<float>()[i], y = b.data_as<float>()[i];
      const float share = std::fabs(x - y) / (tolerance * (1.0f + std::fabs(x)));
      *worst = std::max(*worst, share);
      if (!(share <= 1.0f)) {
        ModelBroken("outputs differ",
                    "output " + std::to_string(o) + " element " + std::to_string(i) +
                        ": ONNX Runtime " + std::to_string(x) + ", " + ref.info().backend + " " +
                        std::to_string(y),
                    path);
      }
    }
  }
  return true;
}

// The native backend checked against ONNX Runtime: the reference backend, or, where this target
// is built against the CPU device (tests/cuda_on_cpu), the CUDA backend with the bytes' choice of
// kernels, CUDA graph, side stream and precision.
struct Native {
  EngineOptions options;
  float tolerance = 1e-4f;  // relative to 1 + |ONNX Runtime's value|
};

// One thread (the fuzzer runs many inputs, each small) and the batches compared.
EngineOptions OptionsFor(const char* backend) {
  EngineOptions options;
  options.backend = backend;
  options.intra_op_threads = 1;
  options.max_batch = 2;
  return options;
}

Native ChooseNative(uint32_t seed) {
  Native n;
  n.options = OptionsFor("reference");
#ifdef LIPSYNC_FUZZ_CUDA_ON_CPU
  Choices pick(reinterpret_cast<const uint8_t*>(&seed), sizeof(seed));
  n.options.backend = "cuda";
  n.options.cuda.kernels =
      pick.Of({CudaKernels::kUnfused, CudaKernels::kFused, CudaKernels::kAuto});
  n.options.cuda.cuda_graph = pick.OneIn(2);
  n.options.cuda.side_stream = pick.OneIn(2);
  if (pick.OneIn(2)) {
    n.options.precision = Precision::kFloat16;
    n.tolerance = 1e-2f;  // float16 activations through a few dozen operators
  }
#else
  (void)seed;
#endif
  return n;
}

}  // namespace
}  // namespace lipsync::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lipsync;
  fuzz::Choices pick(data, size);
  uint32_t seed = 0;
  for (size_t i = 0; i < size; ++i) seed = seed * 31 + data[i];
  fuzz::ModelMaker maker(pick, seed);
  const onnx::ModelProto model = maker.Make();
  static const std::string path = fuzz::ScratchPath("graph-vs-ort.onnx");
  const std::string bytes = model.SerializeAsString();
  fuzz::WriteBytes(path, bytes.data(), bytes.size());
  const fuzz::Native native = fuzz::ChooseNative(seed);
  auto ref = Engine::Create(path, native.options);
  fuzz::CheckRefusal(ref.status(), "the graph compiler");
  static const bool verbose = std::getenv("LIPSYNC_FUZZ_VERBOSE") != nullptr;
  if (!ref.ok()) {
    if (verbose) std::fprintf(stderr, "  refused: %s\n", ref.status().message().c_str());
    return 0;
  }
  auto ort = Engine::Create(path, fuzz::OptionsFor("ort"));
  if (!ort.ok() && !maker.output_shapes()) {
    fuzz::CheckRefusal(ort.status(), "the ONNX Runtime backend");
    if (verbose)
      std::fprintf(stderr, "  ONNX Runtime refused: %s\n", ort.status().message().c_str());
    return 0;
  }
  if (!ort.ok()) {
    fuzz::ModelBroken("the compiler accepted a model ONNX Runtime refuses", ort.status().ToString(),
                      path);
  }
  int compared = 0;
  float worst = 0.0f;
  for (int64_t batch : {1, 2}) {
    compared += fuzz::Compare(**ort, **ref, batch, seed + static_cast<uint32_t>(batch),
                              native.tolerance, path, &worst);
    if (maker.fixed_batch()) break;
  }
  if (verbose) {
    std::string fused;  // the CUDA backend's fused kernels in use
    for (const auto& group : (*ref)->info().kernels.groups) {
      for (const auto& [batch, variant] : group.chosen) {
        if (variant != group.variants.at(0).name) fused += " " + variant;
      }
    }
    const std::string& side = (*ref)->info().kernels.side_stream;
    if (native.options.cuda.side_stream && !side.empty()) fused += "; side stream: " + side;
    std::fprintf(stderr,
                 "  opset %d, %d inputs, %d operators: %d batches compared, worst %.3f of the "
                 "tolerance (%s%s)%s\n",
                 maker.opset(), model.graph().input_size(), model.graph().node_size(), compared,
                 worst, (*ref)->info().backend.c_str(),
                 native.options.precision == Precision::kFloat16 ? ", float16" : "", fused.c_str());
  }
  return 0;
}
