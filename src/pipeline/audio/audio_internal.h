// Pieces of the audio features shared by the whole-signal functions (mel.cc, audio_windows.cc)
// and the streaming AudioFeatureStream (audio_stream.cc). Both paths compute every value with the
// same code on the same numbers, which is what makes the stream's output identical bit for bit.
#pragma once

#include <cstdint>
#include <vector>

#include "lipsync/audio.h"

namespace lipsync::audio_internal {

constexpr int kFftSize = 800;               // n_fft = win_length
constexpr int kFftBins = kFftSize / 2 + 1;  // 401 rfft bins, 20 Hz apart
constexpr int kPad = kFftSize / 2;          // centred frames: 400 samples either side
constexpr double kPreemphasis = 0.97;

// Mel frames for `samples` samples: 1 + samples / 200.
inline int64_t MelFrameCount(int64_t samples) { return 1 + samples / kMelHop; }

// The fewest samples a padding mode needs (reflection needs more than n_fft / 2).
inline int64_t MinSamples(StftPadding padding) {
  return padding == StftPadding::kReflect ? kPad + 1 : 1;
}

// Pre-emphasis y[n] = x[n] - 0.97 x[n-1] in double, with `previous` as x[-1] (0 at the start).
// Fails on NaN or Inf, naming the sample by `first_index` + its position.
Status Preemphasise(const float* x, size_t count, float previous, int64_t first_index,
                    std::vector<double>* y);

// Mel frame t's 800 input samples: the pre-emphasised signal at t*200-400 .. t*200+399, padded
// at the ends. `y` holds the samples from index `base` to `known` - 1; `total` is the signal's
// length once its end is known, -1 before. Internal error if it needs a sample `y` does not hold.
Status GatherFrame(const std::vector<double>& y, int64_t base, int64_t known, int64_t total,
                   int64_t t, StftPadding padding, double* frame);

// Whether mel frame t can be computed from the first `known` samples before the end is known.
inline bool FrameIsFinal(int64_t t, int64_t known, StftPadding padding) {
  // Samples up to index t*200+399; reflecting frame 0's left edge also reads sample 400.
  const int64_t needed = t * kMelHop + kPad + (padding == StftPadding::kReflect && t == 0 ? 1 : 0);
  return known >= needed;
}

// Turns frames into normalised log-mel columns: periodic Hann window, FFT (FFTW, double),
// magnitude, Slaney mel filterbank, dB, clip. One per thread (holds FFT buffers).
class MelColumnMaker {
 public:
  MelColumnMaker();
  ~MelColumnMaker();
  MelColumnMaker(const MelColumnMaker&) = delete;
  MelColumnMaker& operator=(const MelColumnMaker&) = delete;
  // frame: 800 samples; writes column[b * stride] for the 80 bands.
  void Make(const double* frame, float* column, int64_t stride);

 private:
  double* in_;
  void* out_;  // fftw_complex[401]
  std::vector<double> magnitude_;
};

// Encoder window k's first mel frame: int(80 * k / fps).
inline int64_t MelWindowStart(int64_t k, double fps) {
  return static_cast<int64_t>(80.0 * static_cast<double>(k) / fps);
}

// Copies the 16 mel frames from `start` into a [1, 80, 16] window. Element (band b, frame t) is
// mel[b * band_stride + t * frame_stride].
void CopyMelWindow(const float* mel, int64_t band_stride, int64_t frame_stride, int64_t start,
                   float* window);

// Video frame i's UNet audio window [32, 16, 16] from the embeddings (512 floats per row).
// `rows` holds embeddings first_row ... ; `count` is W, the number of embeddings of the whole
// signal (or a lower bound that already covers every row the frame reads).
void FillFrameWindow(const float* rows, int64_t first_row, int64_t count, int64_t frame,
                     WindowEdge edge, float* window);

constexpr int kEmbeddingSize = 512;
constexpr int kFrameRows = 16;  // embedding rows per video frame's window

Status CheckFps(double fps);
// InvalidArgument for a signal too short for the mel spectrogram (empty, or too short to reflect).
Status CheckSampleCount(int64_t samples, StftPadding padding);
// InvalidArgument for a mel spectrogram too short for one encoder window (16 frames).
Status CheckMelFrameCount(int64_t frames);

}  // namespace lipsync::audio_internal
