// Fusion: BN folding, conv epilogues (bias, residual Add, ReLU/Sigmoid), resize+pad+concat.
#include <algorithm>
#include <set>

#include "graph/raw_ops.h"

namespace lipsync::graph {
namespace {

class Fuser {
 public:
  explicit Fuser(LoweredGraph* g) : g_(*g) {
    outputs_.insert(g_.output_tensors.begin(), g_.output_tensors.end());
  }

  void Run() {
    FuseConvChains();
    // A BatchNorm with no conv before it becomes a per-channel 1x1 depthwise conv, which then
    // takes a following activation or residual like any conv.
    for (auto& op : g_.ops) {
      if (!op.dead && op.kind == RawKind::kBatchNorm) BatchNormToConv(&op);
    }
    FuseConvChains();
    FuseAddActivation();
    FuseResize();
  }

 private:
  // The single live op reading `tensor`, or -1 when there are none, several, or it is a graph
  // output (an output must stay materialised).
  int SoleReader(const std::string& tensor) const {
    if (outputs_.count(tensor)) return -1;
    int found = -1;
    for (size_t i = 0; i < g_.ops.size(); ++i) {
      const RawOp& op = g_.ops[i];
      if (op.dead) continue;
      const auto n = std::count(op.inputs.begin(), op.inputs.end(), tensor);
      if (n == 0) continue;
      if (n > 1 || found >= 0) return -1;
      found = static_cast<int>(i);
    }
    return found;
  }

  // Moves op `from` into slot `to` (a later op it absorbed), keeping the order valid: everything
  // the fused op reads exists by then.
  void MoveTo(size_t from, size_t to) {
    if (from == to) return;
    g_.ops[to] = std::move(g_.ops[from]);
    g_.ops[from] = RawOp{};
    g_.ops[from].dead = true;
  }

  void Absorb(RawOp* into, RawOp* other, const std::string& what) {
    into->node_names.insert(into->node_names.end(), other->node_names.begin(),
                            other->node_names.end());
    into->output = other->output;
    g_.notes.push_back(what + ": " + other->node_names.front() + " into " +
                       into->node_names.front());
    other->dead = true;
  }

  void FuseConvChains() {
    for (size_t i = 0; i < g_.ops.size(); ++i) {
      if (g_.ops[i].dead || g_.ops[i].kind != RawKind::kConv) continue;
      size_t last = i;
      for (;;) {
        RawOp& conv = g_.ops[i];
        const int j = SoleReader(conv.output);
        if (j < 0) break;
        RawOp& next = g_.ops[j];
        const bool plain = !conv.epilogue.residual && conv.epilogue.activation == Activation::kNone;
        if (next.kind == RawKind::kBatchNorm && plain) {
          FoldBatchNorm(&conv, next);
          Absorb(&conv, &next, "batchnorm folded");
        } else if (next.kind == RawKind::kAdd && plain && next.inputs[0] != next.inputs[1]) {
          conv.inputs.push_back(next.inputs[0] == conv.output ? next.inputs[1] : next.inputs[0]);
          conv.epilogue.residual = true;
          Absorb(&conv, &next, "residual add fused");
        } else if (next.kind == RawKind::kActivation &&
                   conv.epilogue.activation == Activation::kNone) {
          conv.epilogue.activation = next.epilogue.activation;
          Absorb(&conv, &next, std::string(ActivationName(next.epilogue.activation)) + " fused");
        } else {
          break;
        }
        last = static_cast<size_t>(j);
      }
      MoveTo(i, last);
    }
  }

  static void FoldBatchNorm(RawOp* conv, const RawOp& bn) {
    const int64_t cout = conv->conv.cout;
    const int64_t per_out = static_cast<int64_t>(conv->weight.size()) / cout;
    for (int64_t co = 0; co < cout; ++co) {
      for (int64_t k = 0; k < per_out; ++k) conv->weight[co * per_out + k] *= bn.bn_scale[co];
      conv->bias[co] = conv->bias[co] * bn.bn_scale[co] + bn.bn_shift[co];
    }
  }

  void BatchNormToConv(RawOp* op) {
    const int64_t c = op->shape.c;
    op->kind = RawKind::kConv;
    op->conv = ConvParams{};
    op->conv.cin = op->conv.cout = c;
    op->conv.groups = c;
    op->conv.kind = c == 1 ? ConvKind::kPointwise : ConvKind::kDepthwise;
    op->weight = op->bn_scale;  // [C][1][1][1]
    op->bias = op->bn_shift;
    g_.notes.push_back("batchnorm " + op->node_names.front() + " as a 1x1 depthwise conv");
  }

  void FuseAddActivation() {
    for (size_t i = 0; i < g_.ops.size(); ++i) {
      RawOp& add = g_.ops[i];
      // An add holds one activation: a second one (Relu then Sigmoid) stays a step of its own.
      if (add.dead || add.kind != RawKind::kAdd || add.epilogue.activation != Activation::kNone) {
        continue;
      }
      const int j = SoleReader(add.output);
      if (j < 0 || g_.ops[j].kind != RawKind::kActivation) continue;
      add.epilogue.activation = g_.ops[j].epilogue.activation;
      Absorb(&add, &g_.ops[j], "activation fused into add");
      MoveTo(i, j);
    }
  }

  void FuseResize() {
    for (size_t i = 0; i < g_.ops.size(); ++i) {
      if (g_.ops[i].dead || g_.ops[i].kind != RawKind::kResize) continue;
      g_.ops[i].has_resize = true;
      size_t last = i;
      int j = SoleReader(g_.ops[i].output);
      if (j >= 0 && g_.ops[j].kind == RawKind::kPad) {
        const PadParams& p = g_.ops[j].pad;
        if (p.value == 0.0f && p.top >= 0 && p.left >= 0 && p.bottom >= 0 && p.right >= 0) {
          RawOp& r = g_.ops[i];
          r.resize.pad_top = p.top;
          r.resize.pad_left = p.left;
          r.shape = g_.ops[j].shape;
          Absorb(&r, &g_.ops[j], "zero pad fused into resize");
          last = static_cast<size_t>(j);
          j = SoleReader(r.output);
        }
      }
      if (j >= 0 && g_.ops[j].kind == RawKind::kConcat && g_.ops[j].inputs[0] == g_.ops[i].output) {
        RawOp& cat = g_.ops[j];
        RawOp& r = g_.ops[i];
        cat.inputs[0] = r.inputs[0];
        cat.has_resize = true;
        cat.resize = r.resize;
        cat.node_names.insert(cat.node_names.begin(), r.node_names.begin(), r.node_names.end());
        g_.notes.push_back("resize fused into concat: " + r.node_names.front() + " into " +
                           cat.node_names.back());
        r.dead = true;
        continue;
      }
      MoveTo(i, last);
    }
  }

  LoweredGraph& g_;
  std::set<std::string> outputs_;
};

}  // namespace

void FuseOps(LoweredGraph* graph) { Fuser(graph).Run(); }

}  // namespace lipsync::graph
