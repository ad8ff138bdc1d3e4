// From the mel spectrogram to the UNet's audio input (model spec section 2, steps 6, 8 and 9).
//
// Window count. The spec's count W = int((T - 16) / 80 * fps) + 2 (SyncTalk_2D's dataset length),
// evaluated in floating point in the same order as upstream's Python, with window
// k = mel[:, start : start + 16], start = int(80 k / fps), or the last 16 frames when that runs
// past the end. The other common form, a loop that appends windows until one runs past the end
// and then appends the last 16 frames and stops, gives the same windows except that for some
// lengths (about a quarter) it appends one more, a repeat of the last 16 frames: whenever some
// window already starts at T - 16 (T = 19, 22, 25, 28, 35, ... at 25 fps). The floating-point
// count is also one below the exact floor(5 (T - 16) / 16) + 2 at a few lengths (T = 384, 672,
// ...), again only dropping such a repeat. The unit tests check these statements.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "lipsync/engine.h"
#include "lipsync/npy.h"
#include "pipeline/audio/audio_internal.h"

namespace lipsync {
namespace audio_internal {

Status CheckFps(double fps) {
  if (!std::isfinite(fps) || fps <= 0.0 || fps > 1000.0) {
    return InvalidArgument("video frame rate " + std::to_string(fps) +
                           " is out of range (above 0, at most 1000)");
  }
  return Status::Ok();
}

Status CheckMelFrameCount(int64_t frames) {
  if (frames < kMelWindowFrames) {
    return InvalidArgument("audio too short: " + std::to_string(frames) +
                           " mel frames, one encoder window needs " +
                           std::to_string(kMelWindowFrames) + " (3000 samples, 0.19 s at 16 kHz)");
  }
  return Status::Ok();
}

void CopyMelWindow(const float* mel, int64_t band_stride, int64_t frame_stride, int64_t start,
                   float* window) {
  for (int b = 0; b < kMelBands; ++b) {
    const float* src = mel + b * band_stride + start * frame_stride;
    float* dst = window + b * kMelWindowFrames;
    for (int c = 0; c < kMelWindowFrames; ++c) dst[c] = src[c * frame_stride];
  }
}

void FillFrameWindow(const float* rows, int64_t first_row, int64_t count, int64_t frame,
                     WindowEdge edge, float* window) {
  // Sequence s = [e0] + e + [e_last] has count + 2 rows; the frame reads s[frame-8 .. frame+7].
  const int64_t last = count + 1;
  for (int r = 0; r < kFrameRows; ++r) {
    int64_t j = frame - kFrameRows / 2 + r;
    float* dst = window + static_cast<int64_t>(r) * kEmbeddingSize;
    if (j < 0 || j > last) {
      if (edge == WindowEdge::kZeros) {
        std::memset(dst, 0, sizeof(float) * kEmbeddingSize);
        continue;
      }
      j = std::clamp<int64_t>(j, 0, last);
    }
    const int64_t e = std::clamp<int64_t>(j - 1, 0, count - 1);
    std::memcpy(dst, rows + (e - first_row) * kEmbeddingSize, sizeof(float) * kEmbeddingSize);
  }
}

}  // namespace audio_internal

int64_t MelWindowCount(int64_t mel_frames, double fps) {
  if (mel_frames < kMelWindowFrames || !audio_internal::CheckFps(fps).ok()) return 0;
  return static_cast<int64_t>(static_cast<double>(mel_frames - kMelWindowFrames) / 80.0 * fps) + 2;
}

int64_t VideoFrameCount(int64_t mel_frames, double fps) {
  const int64_t windows = MelWindowCount(mel_frames, fps);
  return windows == 0 ? 0 : windows + 2;
}

Result<Tensor> MelWindows(const Tensor& mel, double fps) {
  using namespace audio_internal;
  LIPSYNC_RETURN_IF_ERROR(CheckFps(fps));
  if (mel.dtype() != DataType::kFloat32 || mel.shape().size() != 2 || mel.shape()[0] != kMelBands) {
    return InvalidArgument("mel spectrogram: expected float32 [80,T], got " +
                           std::string(DataTypeName(mel.dtype())) + " " +
                           ShapeToString(mel.shape(), false));
  }
  const int64_t frames = mel.shape()[1];
  LIPSYNC_RETURN_IF_ERROR(CheckMelFrameCount(frames));
  const int64_t count = MelWindowCount(frames, fps);
  Tensor windows =
      Tensor::Uninitialized(DataType::kFloat32, {count, 1, kMelBands, kMelWindowFrames});
  float* out = windows.data_as<float>();
  for (int64_t k = 0; k < count; ++k) {
    int64_t start = MelWindowStart(k, fps);
    if (start + kMelWindowFrames > frames) start = frames - kMelWindowFrames;
    CopyMelWindow(mel.data_as<float>(), frames, 1, start, out + k * kMelBands * kMelWindowFrames);
  }
  return windows;
}

Result<Tensor> AudioWindowsFromEmbeddings(const Tensor& embeddings, WindowEdge edge) {
  using namespace audio_internal;
  const Shape& shape = embeddings.shape();
  if (embeddings.dtype() != DataType::kFloat32 || shape.size() != 2 || shape[0] < 1 ||
      shape[1] != kEmbeddingSize) {
    return InvalidArgument("audio embeddings: expected float32 [W,512] with W >= 1, got " +
                           std::string(DataTypeName(embeddings.dtype())) + " " +
                           ShapeToString(shape, false));
  }
  const int64_t count = shape[0];
  const int64_t frames = count + 2;
  Tensor windows = Tensor::Uninitialized(DataType::kFloat32, {frames, 32, 16, 16});
  for (int64_t i = 0; i < frames; ++i) {
    FillFrameWindow(embeddings.data_as<float>(), 0, count, i, edge,
                    windows.data_as<float>() + i * kFrameRows * kEmbeddingSize);
  }
  return windows;
}

Result<Tensor> FeatureSequenceFromEmbeddings(const Tensor& embeddings) {
  const Shape& shape = embeddings.shape();
  if (embeddings.dtype() != DataType::kFloat32 || shape.size() != 2 || shape[0] < 1 ||
      shape[1] != audio_internal::kEmbeddingSize) {
    return InvalidArgument("audio embeddings: expected float32 [W,512] with W >= 1, got " +
                           std::string(DataTypeName(embeddings.dtype())) + " " +
                           ShapeToString(shape, false));
  }
  const int64_t count = shape[0];
  const size_t row = audio_internal::kEmbeddingSize * sizeof(float);
  Tensor rows =
      Tensor::Uninitialized(DataType::kFloat32, {count + 2, audio_internal::kEmbeddingSize});
  const auto* src = static_cast<const char*>(embeddings.data());
  auto* dst = static_cast<char*>(rows.data());
  std::memcpy(dst, src, row);
  std::memcpy(dst + row, src, static_cast<size_t>(count) * row);
  std::memcpy(dst + static_cast<size_t>(count + 1) * row,
              src + static_cast<size_t>(count - 1) * row, row);
  return rows;
}

Result<Tensor> LoadFeatureSequence(const std::string& path) {
  LIPSYNC_ASSIGN_OR_RETURN(Tensor t, LoadNpy(path));
  if (t.dtype() != DataType::kFloat32 || t.shape().size() != 2 || t.shape()[0] < 1 ||
      t.shape()[1] != audio_internal::kEmbeddingSize) {
    return InvalidArgument("audio features '" + path + "': expected float32 [frames, 512], got " +
                           std::string(DataTypeName(t.dtype())) + " " +
                           ShapeToString(t.shape(), false));
  }
  LIPSYNC_RETURN_IF_ERROR(CheckFinite(t.view(), "audio features '" + path + "'"));
  return t;
}

Result<Tensor> AudioWindowsFromSequence(const Tensor& sequence, const std::vector<int64_t>& frames,
                                        WindowEdge edge) {
  using namespace audio_internal;
  const Shape& shape = sequence.shape();
  if (sequence.dtype() != DataType::kFloat32 || shape.size() != 2 || shape[0] < 1 ||
      shape[1] != kEmbeddingSize) {
    return InvalidArgument("audio feature sequence: expected float32 [F,512] with F >= 1, got " +
                           std::string(DataTypeName(sequence.dtype())) + " " +
                           ShapeToString(shape, false));
  }
  const int64_t rows = shape[0];
  Tensor windows =
      Tensor::Uninitialized(DataType::kFloat32, {static_cast<int64_t>(frames.size()), 32, 16, 16});
  for (size_t k = 0; k < frames.size(); ++k) {
    float* window = windows.data_as<float>() + k * kFrameRows * kEmbeddingSize;
    for (int r = 0; r < kFrameRows; ++r) {
      int64_t j = frames[k] - kFrameRows / 2 + r;
      float* dst = window + static_cast<int64_t>(r) * kEmbeddingSize;
      if (j < 0 || j >= rows) {
        if (edge == WindowEdge::kZeros) {
          std::memset(dst, 0, sizeof(float) * kEmbeddingSize);
          continue;
        }
        j = std::clamp<int64_t>(j, 0, rows - 1);
      }
      std::memcpy(dst, sequence.data_as<float>() + j * kEmbeddingSize,
                  sizeof(float) * kEmbeddingSize);
    }
  }
  return windows;
}

Result<Tensor> ComputeAudioWindows(AudioEncoder& encoder, const Tensor& mel, double fps,
                                   WindowEdge edge) {
  LIPSYNC_ASSIGN_OR_RETURN(Tensor windows, MelWindows(mel, fps));
  LIPSYNC_ASSIGN_OR_RETURN(Tensor embeddings, encoder.Encode(windows));
  return AudioWindowsFromEmbeddings(embeddings, edge);
}

}  // namespace lipsync
