#include "backends/reference/reference_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace lipsync::reference {
namespace {

using graph::Activation;
using graph::ConvKind;
using graph::ItemShape;
using graph::Plan;
using graph::PlanStep;

struct View {
  float* data;
  ItemShape s;
  float* at(int64_t n, int64_t y, int64_t x) const {
    return data + ((n * s.h + y) * s.w + x) * s.c;
  }
};

View Buffer(const Plan& plan, int id, int64_t batch, float* arena) {
  const auto& b = plan.buffers[id];
  return {arena + b.offset * batch, b.shape};
}

int ThreadCount(int requested) {
#ifdef _OPENMP
  return requested > 0 ? requested : omp_get_max_threads();
#else
  (void)requested;
  return 1;
#endif
}

float Activate(float v, Activation a) {
  switch (a) {
    case Activation::kRelu:
      return v > 0.0f ? v : 0.0f;
    case Activation::kSigmoid:
      return 1.0f / (1.0f + std::exp(-v));
    case Activation::kNone:
      return v;
  }
  return v;
}

// Accumulates in double so that the reference's own rounding error is far below the float32
// backends it checks.
void Conv(const Plan& plan, const PlanStep& step, int64_t batch, float* arena, int threads) {
  const auto& c = step.conv;
  const View in = Buffer(plan, step.inputs[0], batch, arena);
  const View out = Buffer(plan, step.output, batch, arena);
  const bool residual = step.epilogue.residual;
  const View res = residual ? Buffer(plan, step.inputs[1], batch, arena) : View{nullptr, {}};
  const float* w = plan.weights.data() + step.weight_offset;
  const float* bias = plan.weights.data() + step.bias_offset;
  const int64_t cig = c.cin / c.groups, cog = c.cout / c.groups;
  const int64_t rows = batch * out.s.h;
  const int thread_count = ThreadCount(threads);
  (void)thread_count;
#pragma omp parallel for schedule(static) num_threads(thread_count)
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t n = row / out.s.h, oy = row % out.s.h;
    std::vector<double> acc(c.cout);
    for (int64_t ox = 0; ox < out.s.w; ++ox) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t ky = 0; ky < c.kh; ++ky) {
        const int64_t iy = oy * c.stride_h - c.pad_top + ky;
        if (iy < 0 || iy >= in.s.h) continue;  // zero padding
        for (int64_t kx = 0; kx < c.kw; ++kx) {
          const int64_t ix = ox * c.stride_w - c.pad_left + kx;
          if (ix < 0 || ix >= in.s.w) continue;
          const float* x = in.at(n, iy, ix);
          switch (c.kind) {
            case ConvKind::kPointwise:  // w[co][ci]
              for (int64_t co = 0; co < c.cout; ++co) {
                const float* wr = w + co * c.cin;
                double sum = 0.0;
#pragma omp simd reduction(+ : sum)
                for (int64_t ci = 0; ci < c.cin; ++ci) sum += double(x[ci]) * wr[ci];
                acc[co] += sum;
              }
              break;
            case ConvKind::kDepthwise: {  // w[ky][kx][c]
              const float* wk = w + (ky * c.kw + kx) * c.cout;
              for (int64_t ch = 0; ch < c.cout; ++ch) acc[ch] += double(x[ch]) * wk[ch];
              break;
            }
            case ConvKind::kDense:  // w[co][ky][kx][ci within the group]
              for (int64_t co = 0; co < c.cout; ++co) {
                const float* xg = x + (co / cog) * cig;
                const float* wr = w + ((co * c.kh + ky) * c.kw + kx) * cig;
                double sum = 0.0;
#pragma omp simd reduction(+ : sum)
                for (int64_t ci = 0; ci < cig; ++ci) sum += double(xg[ci]) * wr[ci];
                acc[co] += sum;
              }
              break;
          }
        }
      }
      float* o = out.at(n, oy, ox);
      const float* r = residual ? res.at(n, oy, ox) : nullptr;
      for (int64_t co = 0; co < c.cout; ++co) {
        const double v = acc[co] + bias[co] + (r ? r[co] : 0.0f);
        o[co] = Activate(static_cast<float>(v), step.epilogue.activation);
      }
    }
  }
}

// Where output row (or column) i of a bilinear resize reads its input, in [0, in - 1]: ONNX's
// coordinate transformations (plan.h).
float SourceCoordinate(graph::ResizeMode mode, int64_t i, int64_t in, int64_t out, float scale) {
  float f = 0.0f;
  switch (mode) {
    case graph::ResizeMode::kBilinearAlignCorners:  // the corner pixels of both grids coincide
      f = out > 1 ? static_cast<float>(i) * (in - 1) / (out - 1) : 0.0f;
      break;
    case graph::ResizeMode::kBilinearPytorchHalfPixel:
      if (out == 1) break;
      [[fallthrough]];
    case graph::ResizeMode::kBilinearHalfPixel:  // pixel centres at + 0.5 in both grids
      f = (static_cast<float>(i) + 0.5f) / scale - 0.5f;
      break;
    default:  // asymmetric
      f = static_cast<float>(i) / scale;
  }
  return std::clamp(f, 0.0f, static_cast<float>(in - 1));
}

void ResizeConcat(const Plan& plan, const PlanStep& step, int64_t batch, float* arena) {
  const View src = Buffer(plan, step.inputs[0], batch, arena);
  const View out = Buffer(plan, step.output, batch, arena);
  const auto& r = step.resize;
  for (int64_t n = 0; n < batch; ++n) {
    for (int64_t y = 0; y < out.s.h; ++y) {
      for (int64_t x = 0; x < out.s.w; ++x) {
        float* o = out.at(n, y, x);
        const int64_t ry = y - r.pad_top, rx = x - r.pad_left;
        if (ry < 0 || ry >= r.out_h || rx < 0 || rx >= r.out_w) {
          std::fill(o, o + src.s.c, 0.0f);
        } else if (r.mode == graph::ResizeMode::kNearest) {
          const int64_t sy = std::min<int64_t>(ry * src.s.h / r.out_h, src.s.h - 1);
          const int64_t sx = std::min<int64_t>(rx * src.s.w / r.out_w, src.s.w - 1);
          std::memcpy(o, src.at(n, sy, sx), src.s.c * sizeof(float));
        } else {
          const float fy = SourceCoordinate(r.mode, ry, src.s.h, r.out_h, r.scale_h);
          const float fx = SourceCoordinate(r.mode, rx, src.s.w, r.out_w, r.scale_w);
          const int64_t y0 = static_cast<int64_t>(fy), x0 = static_cast<int64_t>(fx);
          const int64_t y1 = std::min(y0 + 1, src.s.h - 1), x1 = std::min(x0 + 1, src.s.w - 1);
          const float dy = fy - y0, dx = fx - x0;
          const float *a = src.at(n, y0, x0), *b = src.at(n, y0, x1);
          const float *c = src.at(n, y1, x0), *d = src.at(n, y1, x1);
          for (int64_t ch = 0; ch < src.s.c; ++ch) {
            const float top = a[ch] + (b[ch] - a[ch]) * dx;
            const float bottom = c[ch] + (d[ch] - c[ch]) * dx;
            o[ch] = top + (bottom - top) * dy;
          }
        }
        int64_t ch = src.s.c;
        for (size_t i = 1; i < step.inputs.size(); ++i) {
          const View other = Buffer(plan, step.inputs[i], batch, arena);
          std::memcpy(o + ch, other.at(n, y, x), other.s.c * sizeof(float));
          ch += other.s.c;
        }
      }
    }
  }
}

void Concat(const Plan& plan, const PlanStep& step, int64_t batch, float* arena) {
  const View out = Buffer(plan, step.output, batch, arena);
  for (int64_t n = 0; n < batch; ++n) {
    for (int64_t y = 0; y < out.s.h; ++y) {
      for (int64_t x = 0; x < out.s.w; ++x) {
        int64_t ch = 0;
        for (int id : step.inputs) {
          const View in = Buffer(plan, id, batch, arena);
          std::memcpy(out.at(n, y, x) + ch, in.at(n, y, x), in.s.c * sizeof(float));
          ch += in.s.c;
        }
      }
    }
  }
}

void Pad(const Plan& plan, const PlanStep& step, int64_t batch, float* arena) {
  const View in = Buffer(plan, step.inputs[0], batch, arena);
  const View out = Buffer(plan, step.output, batch, arena);
  for (int64_t n = 0; n < batch; ++n) {
    for (int64_t y = 0; y < out.s.h; ++y) {
      for (int64_t x = 0; x < out.s.w; ++x) {
        const int64_t iy = y - step.pad.top, ix = x - step.pad.left;
        float* o = out.at(n, y, x);
        if (iy < 0 || iy >= in.s.h || ix < 0 || ix >= in.s.w) {
          std::fill(o, o + out.s.c, step.pad.value);
        } else {
          std::memcpy(o, in.at(n, iy, ix), in.s.c * sizeof(float));
        }
      }
    }
  }
}

void Elementwise(const Plan& plan, const PlanStep& step, int64_t batch, float* arena) {
  const View a = Buffer(plan, step.inputs[0], batch, arena);
  const View out = Buffer(plan, step.output, batch, arena);
  const int64_t count = batch * out.s.elements();
  const float* b = step.kind == graph::StepKind::kAdd
                       ? Buffer(plan, step.inputs[1], batch, arena).data
                       : nullptr;
  for (int64_t i = 0; i < count; ++i) {
    const float v = b ? a.data[i] + b[i] : a.data[i];
    out.data[i] = Activate(v, step.epilogue.activation);
  }
}

}  // namespace

void RunStep(const Plan& plan, const PlanStep& step, int64_t batch, float* arena, int threads) {
  switch (step.kind) {
    case graph::StepKind::kConv:
      return Conv(plan, step, batch, arena, threads);
    case graph::StepKind::kResizeConcat:
      return ResizeConcat(plan, step, batch, arena);
    case graph::StepKind::kConcat:
      return Concat(plan, step, batch, arena);
    case graph::StepKind::kPad:
      return Pad(plan, step, batch, arena);
    case graph::StepKind::kAdd:
    case graph::StepKind::kActivation:
    case graph::StepKind::kCopy:
      return Elementwise(plan, step, batch, arena);
  }
}

}  // namespace lipsync::reference
