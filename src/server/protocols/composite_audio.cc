#include "server/protocols/composite_audio.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <string>

namespace lipsync::server {
namespace {

static_assert(std::endian::native == std::endian::little,
              "request audio is little-endian floats copied as they are");

constexpr int kWindowElements = 32 * 16 * 16;
constexpr int kMinSampleRate = 8000, kMaxSampleRate = 192000;

// Copies `count` windows starting at `first` of a [frames, 32, 16, 16] tensor.
Tensor SliceWindows(const Tensor& windows, int64_t first, int64_t count) {
  Tensor out = Tensor::Uninitialized(DataType::kFloat32, {count, 32, 16, 16});
  std::memcpy(out.data(), windows.data_as<float>() + first * kWindowElements,
              static_cast<size_t>(count) * kWindowElements * sizeof(float));
  return out;
}

// The chunk as 16 kHz samples: as it is at 16 kHz, else resampled. Only what the placed chunk
// can use is resampled (plus 20 ms for the resampler's filter).
Result<std::vector<float>> To16k(const float* pcm, size_t samples, int rate, size_t needed) {
  if (rate == kAudioSampleRate) {
    return std::vector<float>(pcm, pcm + std::min(samples, needed));
  }
  const size_t source =
      static_cast<size_t>((static_cast<double>(needed) * rate + kAudioSampleRate - 1) /
                          kAudioSampleRate) +
      static_cast<size_t>(rate / 50);
  std::vector<float> in(pcm, pcm + std::min(samples, source));
  auto out = ResampleAudio(in, rate, kAudioSampleRate);
  if (!out.ok()) return out.status().WithContext("raw_audio at " + std::to_string(rate) + " Hz");
  return out;
}

}  // namespace

int CompositeAudioLead(int start_frame_idx) {
  return std::clamp(start_frame_idx, 0, kCompositeAudioLead);
}

// The last output frame g = lead + batch - 1 reads sequence rows up to g + 7; the clients' chunk
// ends there (g + 8 frames). Row g + 7 is encoder window g + 6, whose mel frames read samples up
// to 11.3 frames after frame g, so nothing past frame g + 12 changes any window.
size_t CompositeChunkMinSamples(int lead, int batch) {
  return static_cast<size_t>(lead + batch + 7) * kSamplesPerVideoFrame;
}

size_t CompositeChunkMaxSamples(int lead, int batch) {
  return static_cast<size_t>(lead + batch + 11) * kSamplesPerVideoFrame;
}

std::vector<float> PlaceCompositeChunk(const float* pcm, size_t samples, int lead, int batch) {
  const size_t used = std::min(samples, CompositeChunkMaxSamples(lead, batch));
  std::vector<float> chunk(std::max(used, CompositeChunkMinSamples(lead, batch)), 0.0f);
  std::copy_n(pcm, used, chunk.begin());
  return chunk;
}

Result<Tensor> CompositeAudioWindows(AudioEncoder& encoder, const float* pcm, size_t samples,
                                     int batch, int lead) {
  LIPSYNC_ASSIGN_OR_RETURN(Tensor mel, MelSpectrogram(pcm, samples));
  LIPSYNC_ASSIGN_OR_RETURN(Tensor windows, ComputeAudioWindows(encoder, mel));
  const int64_t have = windows.shape().empty() ? 0 : windows.shape()[0];
  if (have < lead + batch) {
    return InvalidArgument("raw_audio gives " + std::to_string(have) +
                           " audio windows, fewer than the " + std::to_string(lead + batch) +
                           " needed");
  }
  return SliceWindows(windows, lead, batch);
}

Result<Tensor> GoServerAudioWindows(AudioEncoder& encoder, const float* pcm, size_t samples,
                                    int batch) {
  // Windows up to batch + 15 read mel frames below 3.2 (batch + 15) + 16, whose STFT frames end
  // before sample 640 (batch + 21); and their count is already batch + 16 at that length. So
  // later samples change nothing.
  samples = std::min(samples, static_cast<size_t>(batch + 24) * kSamplesPerVideoFrame);
  Tensor out(DataType::kFloat32, {batch, 32, 16, 16});  // zeros: the Go server's empty case
  LIPSYNC_ASSIGN_OR_RETURN(Tensor mel, MelSpectrogram(pcm, samples));
  const int64_t frames = mel.shape()[1];
  const int64_t count =
      std::min<int64_t>(std::max<int64_t>(0, (frames - 16) * 25 / 80), batch + 16);
  if (count == 0) return out;
  LIPSYNC_ASSIGN_OR_RETURN(Tensor all, MelWindows(mel));
  Tensor windows = Tensor::Uninitialized(DataType::kFloat32, {count, 1, 80, 16});
  std::memcpy(windows.data(), all.data(), windows.byte_size());
  LIPSYNC_ASSIGN_OR_RETURN(Tensor e, encoder.Encode(windows));
  std::vector<int64_t> ids(static_cast<size_t>(batch));
  for (int i = 0; i < batch; ++i) ids[static_cast<size_t>(i)] = i;
  LIPSYNC_ASSIGN_OR_RETURN(Tensor sequence, FeatureSequenceFromEmbeddings(e));
  return AudioWindowsFromSequence(sequence, ids);
}

Result<Tensor> CompositeAudioInput(AudioEncoder& encoder,
                                   const monolithic::CompositeBatchRequest& request,
                                   Behaviour align) {
  const int batch = request.batch_size();
  const std::string& raw = request.raw_audio();
  if (!raw.empty()) {
    if (raw.size() % sizeof(float) != 0) {
      return InvalidArgument("raw_audio holds " + std::to_string(raw.size()) +
                             " bytes, not a whole number of float32 samples");
    }
    const size_t samples = raw.size() / sizeof(float);
    std::vector<float> pcm(samples);
    std::memcpy(pcm.data(), raw.data(), raw.size());
    LIPSYNC_RETURN_IF_ERROR(CheckFinite(
        TensorView{DataType::kFloat32, {static_cast<int64_t>(samples)}, pcm.data()}, "raw_audio"));
    // The Go server takes every chunk as 16 kHz and as it is.
    if (align == Behaviour::kOld) return GoServerAudioWindows(encoder, pcm.data(), samples, batch);
    const int lead = CompositeAudioLead(request.start_frame_idx());
    const size_t needed = CompositeChunkMaxSamples(lead, batch);
    const int rate = request.sample_rate() == 0 ? kAudioSampleRate : request.sample_rate();
    LIPSYNC_ASSIGN_OR_RETURN(std::vector<float> pcm16, To16k(pcm.data(), samples, rate, needed));
    const std::vector<float> chunk = PlaceCompositeChunk(pcm16.data(), pcm16.size(), lead, batch);
    return CompositeAudioWindows(encoder, chunk.data(), chunk.size(), batch, lead);
  }
  const std::string& features = request.audio_features();
  if (features.empty()) {
    return InvalidArgument(
        "the request has no audio: set raw_audio (float32 PCM) or audio_features (one float32 "
        "[32,16,16] window)");
  }
  constexpr size_t kBytes = kWindowElements * sizeof(float);
  if (features.size() != kBytes) {
    return InvalidArgument("audio_features holds " + std::to_string(features.size()) +
                           " bytes; expected " + std::to_string(kBytes) +
                           " (one float32 [32,16,16] window, used for every frame)");
  }
  Tensor out = Tensor::Uninitialized(DataType::kFloat32, {batch, 32, 16, 16});
  for (int i = 0; i < batch; ++i) {
    std::memcpy(out.data_as<float>() + static_cast<size_t>(i) * kWindowElements, features.data(),
                kBytes);
  }
  LIPSYNC_RETURN_IF_ERROR(CheckFinite(out.view(), "audio_features"));
  return out;
}

}  // namespace lipsync::server
