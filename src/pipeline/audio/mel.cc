// The normalised log-mel spectrogram of the model spec (section 2, steps 2 to 5), in double
// precision: a float32 FFT loses too much in the quiet bands, where the dB scale magnifies it.
#include <fftw3.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <string>
#include <vector>

#include "pipeline/audio/audio_internal.h"

namespace lipsync::audio_internal {
namespace {

constexpr double kMelFmin = 55.0;
constexpr double kMelFmax = 7600.0;

// The Slaney mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above.
constexpr double kLinearHzPerMel = 200.0 / 3.0;
constexpr double kLogStartHz = 1000.0;
constexpr double kLogStartMel = kLogStartHz / kLinearHzPerMel;  // 15
const double kLogStep = std::log(6.4) / 27.0;

double HzToMel(double hz) {
  return hz < kLogStartHz ? hz / kLinearHzPerMel
                          : kLogStartMel + std::log(hz / kLogStartHz) / kLogStep;
}
double MelToHz(double mel) {
  return mel < kLogStartMel ? mel * kLinearHzPerMel
                            : kLogStartHz * std::exp(kLogStep * (mel - kLogStartMel));
}

// Triangular filters between 82 points evenly spaced in mel from fmin to fmax, each scaled by
// 2 / (its width in Hz) (Slaney's area normalisation). Kept as each band's non-zero bin range.
struct MelFilterbank {
  struct Band {
    int first_bin = 0;
    std::vector<double> weights;
  };
  std::vector<Band> bands;
  std::vector<double> window;  // periodic Hann, 800 points

  MelFilterbank() {
    std::vector<double> edges(kMelBands + 2);
    const double lo = HzToMel(kMelFmin), hi = HzToMel(kMelFmax);
    for (int i = 0; i < kMelBands + 2; ++i) {
      edges[i] = MelToHz(lo + (hi - lo) * i / (kMelBands + 1));
    }
    bands.resize(kMelBands);
    for (int b = 0; b < kMelBands; ++b) {
      const double left = edges[b], centre = edges[b + 1], right = edges[b + 2];
      const double area = 2.0 / (right - left);
      Band& band = bands[b];
      band.first_bin = -1;
      for (int k = 0; k < kFftBins; ++k) {
        const double hz = static_cast<double>(k) * kAudioSampleRate / kFftSize;
        const double rising = (hz - left) / (centre - left);
        const double falling = (right - hz) / (right - centre);
        const double w = std::max(0.0, std::min(rising, falling)) * area;
        if (w <= 0.0) {
          if (band.first_bin >= 0) break;
          continue;
        }
        if (band.first_bin < 0) band.first_bin = k;
        band.weights.push_back(w);
      }
      if (band.first_bin < 0) band.first_bin = 0;  // no bin inside: an all-zero band
    }
    window.resize(kFftSize);
    for (int n = 0; n < kFftSize; ++n) {
      window[n] = 0.5 - 0.5 * std::cos(2.0 * M_PI * n / kFftSize);
    }
  }
};

const MelFilterbank& Filterbank() {
  static const MelFilterbank bank;
  return bank;
}

// One FFTW plan for the process, made once (FFTW's planner is not thread-safe; executing a plan
// on other buffers is). FFTW_ESTIMATE picks the same algorithm every time, so every caller gets
// the same bits for the same input.
fftw_plan Plan() {
  static std::once_flag once;
  static fftw_plan plan = nullptr;
  std::call_once(once, [] {
    double* in = fftw_alloc_real(kFftSize);
    fftw_complex* out = fftw_alloc_complex(kFftBins);
    plan = fftw_plan_dft_r2c_1d(kFftSize, in, out, FFTW_ESTIMATE);
    fftw_free(in);
    fftw_free(out);
  });
  return plan;
}

}  // namespace

MelColumnMaker::MelColumnMaker()
    : in_(fftw_alloc_real(kFftSize)), out_(fftw_alloc_complex(kFftBins)), magnitude_(kFftBins) {
  Plan();
  Filterbank();
}

MelColumnMaker::~MelColumnMaker() {
  fftw_free(in_);
  fftw_free(out_);
}

void MelColumnMaker::Make(const double* frame, float* column, int64_t stride) {
  const MelFilterbank& bank = Filterbank();
  for (int n = 0; n < kFftSize; ++n) in_[n] = frame[n] * bank.window[n];
  auto* spectrum = static_cast<fftw_complex*>(out_);
  fftw_execute_dft_r2c(Plan(), in_, spectrum);
  for (int k = 0; k < kFftBins; ++k) magnitude_[k] = std::hypot(spectrum[k][0], spectrum[k][1]);
  for (int b = 0; b < kMelBands; ++b) {
    const auto& band = bank.bands[b];
    double energy = 0.0;
    for (size_t j = 0; j < band.weights.size(); ++j) {
      energy += band.weights[j] * magnitude_[band.first_bin + j];
    }
    const double db = 20.0 * std::log10(std::max(1e-5, energy)) - 20.0;
    const double normalised = std::clamp(8.0 * (db + 100.0) / 100.0 - 4.0, -4.0, 4.0);
    column[b * stride] = static_cast<float>(normalised);
  }
}

Status CheckSampleCount(int64_t samples, StftPadding padding) {
  if (samples <= 0) return InvalidArgument("audio is empty: no samples");
  if (samples < MinSamples(padding)) {
    return InvalidArgument("audio of " + std::to_string(samples) +
                           " samples is too short to reflect-pad (needs more than " +
                           std::to_string(kPad) + ")");
  }
  return Status::Ok();
}

Status Preemphasise(const float* x, size_t count, float previous, int64_t first_index,
                    std::vector<double>* y) {
  y->reserve(y->size() + count);
  double prev = previous;
  for (size_t i = 0; i < count; ++i) {
    if (!std::isfinite(x[i])) {
      return InvalidArgument("audio sample " + std::to_string(first_index + i) + " is " +
                             (std::isnan(x[i]) ? "NaN" : "infinite"));
    }
    const double cur = x[i];
    y->push_back(cur - kPreemphasis * prev);
    prev = cur;
  }
  return Status::Ok();
}

Status GatherFrame(const std::vector<double>& y, int64_t base, int64_t known, int64_t total,
                   int64_t t, StftPadding padding, double* frame) {
  const bool reflect = padding == StftPadding::kReflect;
  const int64_t first = t * kMelHop - kPad;
  for (int j = 0; j < kFftSize; ++j) {
    int64_t idx = first + j;
    if (idx < 0) {
      if (!reflect) {
        frame[j] = 0.0;
        continue;
      }
      idx = -idx;
    } else if (total >= 0 && idx >= total) {
      if (!reflect) {
        frame[j] = 0.0;
        continue;
      }
      idx = 2 * (total - 1) - idx;
    }
    if (idx < base || idx >= known) {
      return Internal("mel frame " + std::to_string(t) + " needs audio sample " +
                      std::to_string(idx) + ", which is not held (held: " + std::to_string(base) +
                      " to " + std::to_string(known - 1) + ")");
    }
    frame[j] = y[static_cast<size_t>(idx - base)];
  }
  return Status::Ok();
}

}  // namespace lipsync::audio_internal

namespace lipsync {

Result<Tensor> MelSpectrogram(const float* pcm, size_t count, const MelOptions& options) {
  using namespace audio_internal;
  if (pcm == nullptr && count > 0) return InvalidArgument("audio: no sample data");
  LIPSYNC_RETURN_IF_ERROR(CheckSampleCount(static_cast<int64_t>(count), options.padding));
  std::vector<double> y;
  LIPSYNC_RETURN_IF_ERROR(Preemphasise(pcm, count, 0.0f, 0, &y));
  const int64_t n = static_cast<int64_t>(count);
  const int64_t frames = MelFrameCount(n);
  Tensor mel = Tensor::Uninitialized(DataType::kFloat32, {kMelBands, frames});
  float* out = mel.data_as<float>();
  MelColumnMaker maker;
  std::vector<double> frame(kFftSize);
  for (int64_t t = 0; t < frames; ++t) {
    LIPSYNC_RETURN_IF_ERROR(GatherFrame(y, 0, n, n, t, options.padding, frame.data()));
    maker.Make(frame.data(), out + t, frames);
  }
  return mel;
}

}  // namespace lipsync
