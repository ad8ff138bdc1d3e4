// The monolithic service's request audio (CompositeAudioInput), by the Go server's rule and by
// lipsync's. The request is either the rest of the bytes parsed as a CompositeBatchRequest, or
// built from them: batch size, start frame, sample rate (unset, 16 kHz, the common rates, the
// limits and just past them), raw audio of any length up to past what the last frame reads (whole
// float32 samples or not, NaN and infinities possible), or one features window of any size. A
// refusal must be short and not internal; an answer must be [batch, 32, 16, 16] and finite, and
// equal what the obvious path gives: the whole chunk resampled and featurised, without the cuts
// CompositeAudioInput makes to skip samples that cannot change a window.
#include <monolithic/monolithic.pb.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "fuzz_check.h"
#include "fuzz_input.h"
#include "lipsync/audio.h"
#include "server/protocols/composite_audio.h"
#include "server/protocols/monolithic_service.h"
#include "tiny_encoder.h"

namespace lipsync::fuzz {
namespace {

using monolithic::CompositeBatchRequest;

CompositeBatchRequest MakeRequest(Choices& pick) {
  CompositeBatchRequest r;
  r.set_model_id("sanders");
  r.set_batch_size(pick.Of({1, 1, 2, 5, 8, 25, 32, 0, 33}));
  r.set_start_frame_idx(pick.Of({0, 0, 1, 7, 8, 9, 500, -1}));
  r.set_sample_rate(pick.Of({0, 0, 16000, 8000, 22050, 24000, 44100, 48000, 192000, 7999, 192001}));
  const int rate = r.sample_rate() == 0 ? kAudioSampleRate : r.sample_rate();
  if (pick.OneIn(6)) {  // precomputed features: one window, or a size that is not one
    const size_t bytes = pick.OneIn(4) ? static_cast<size_t>(pick.PickWide(0, 5000))
                                       : kAudioWindowValues * sizeof(float);
    std::string features(bytes, '\0');
    for (size_t i = 0; i < bytes; ++i) features[i] = static_cast<char>(pick.Pick(0, 255));
    r.set_audio_features(features);
    return r;
  }
  // Audio of up to 60 video frames at the chosen rate, as the clients cut it or any other length.
  const int frames = pick.OneIn(2) ? r.batch_size() + 15 : pick.Pick(0, 60);
  size_t samples = static_cast<size_t>(frames) * static_cast<size_t>(rate) / 25;
  if (pick.OneIn(3)) samples += static_cast<size_t>(pick.Pick(0, 255));
  const bool raw_bits = pick.OneIn(8);  // float bits as they come: NaN and infinities too
  std::vector<float> pcm(samples);
  const uint8_t* bytes = pick.rest();
  const size_t have = pick.rest_size();
  for (size_t i = 0; i < samples && have > 0; ++i) {
    pcm[i] = raw_bits ? FloatBitsSample(bytes, have, i) : Int16Sample(bytes, have, i);
  }
  std::string raw(reinterpret_cast<const char*>(pcm.data()), pcm.size() * sizeof(float));
  if (pick.OneIn(16)) raw.resize(raw.size() + static_cast<size_t>(pick.Pick(1, 3)));
  r.set_raw_audio(raw);
  return r;
}

std::vector<float> RawSamples(const CompositeBatchRequest& r) {
  std::vector<float> pcm(r.raw_audio().size() / sizeof(float));
  if (!pcm.empty()) std::memcpy(pcm.data(), r.raw_audio().data(), pcm.size() * sizeof(float));
  return pcm;
}

// lipsync's rule on the whole chunk: resampled whole, completed with silence, never cut.
Result<Tensor> WholeChunkWindows(AudioEncoder& encoder, const CompositeBatchRequest& r) {
  std::vector<float> pcm = RawSamples(r);
  if (r.sample_rate() != 0 && r.sample_rate() != kAudioSampleRate) {
    LIPSYNC_ASSIGN_OR_RETURN(pcm, ResampleAudio(pcm, r.sample_rate(), kAudioSampleRate));
  }
  const int lead = server::CompositeAudioLead(r.start_frame_idx());
  pcm.resize(std::max(pcm.size(), server::CompositeChunkMinSamples(lead, r.batch_size())), 0.0f);
  return server::CompositeAudioWindows(encoder, pcm.data(), pcm.size(), r.batch_size(), lead);
}

// The Go server's rule on the whole chunk: mel frames T give min((T - 16) * 25 / 80, batch + 16)
// encoder windows, and output frame i reads rows i - 8 .. i + 7 of [e0] + e + [e_last].
Result<Tensor> WholeChunkGoWindows(AudioEncoder& encoder, const CompositeBatchRequest& r) {
  const std::vector<float> pcm = RawSamples(r);
  const int batch = r.batch_size();
  LIPSYNC_ASSIGN_OR_RETURN(Tensor mel, MelSpectrogram(pcm.data(), pcm.size()));
  const int64_t count =
      std::min<int64_t>(std::max<int64_t>(0, (mel.shape()[1] - 16) * 25 / 80), batch + 16);
  if (count == 0) return Tensor(DataType::kFloat32, {batch, 32, 16, 16});
  LIPSYNC_ASSIGN_OR_RETURN(Tensor all, MelWindows(mel));
  Tensor windows = Tensor::Uninitialized(DataType::kFloat32, {count, 1, 80, 16});
  std::memcpy(windows.data(), all.data(), windows.byte_size());
  LIPSYNC_ASSIGN_OR_RETURN(Tensor e, encoder.Encode(windows));
  LIPSYNC_ASSIGN_OR_RETURN(Tensor sequence, FeatureSequenceFromEmbeddings(e));
  std::vector<int64_t> frames(static_cast<size_t>(batch));
  for (int i = 0; i < batch; ++i) frames[static_cast<size_t>(i)] = i;
  return AudioWindowsFromSequence(sequence, frames);
}

// How close lipsync's rule must come to the whole chunk: exactly at 16 kHz. Resampling a prefix
// of the chunk gives the whole resampling's samples to within rounding (the resampler filters in
// blocks, so samples differ by about 1e-7 of the loudest): within 1e-5 for PCM within [-1, 1];
// past it the rounding lifts a quiet mel band above the spectrogram's floor, so such chunks are
// not compared (nullopt).
std::optional<float> LipsyncTolerance(const CompositeBatchRequest& r) {
  if (r.sample_rate() == 0 || r.sample_rate() == kAudioSampleRate) return 0.0f;
  for (float x : RawSamples(r)) {
    if (std::fabs(x) > 1.0f) return std::nullopt;
  }
  return 1e-5f;
}

void CheckAnswer(const Result<Tensor>& got, const Result<Tensor>& whole,
                 const CompositeBatchRequest& r, const char* rule, std::optional<float> tolerance) {
  CheckRefusal(got.status(), rule);
  if (!got.ok()) return;
  const Shape shape{r.batch_size(), 32, 16, 16};
  if (got->shape() != shape) Broken(rule, "windows of shape " + ShapeToString(got->shape()));
  const float* v = got->data_as<float>();
  for (int64_t i = 0; i < got->element_count(); ++i) {
    if (!std::isfinite(v[i])) Broken(rule, "window value " + std::to_string(i) + " is not finite");
  }
  if (r.raw_audio().empty()) return;
  if (!whole.ok()) Broken(rule, "the whole chunk's windows failed: " + whole.status().ToString());
  if (whole->shape() != shape)
    Broken(rule, "the whole chunk gave " + ShapeToString(whole->shape()));
  if (!tolerance) return;
  const float* w = whole->data_as<float>();
  for (int64_t i = 0; i < got->element_count(); ++i) {
    if (std::fabs(v[i] - w[i]) <= *tolerance) continue;
    Broken(rule, "frame " + std::to_string(i / kAudioWindowValues) + " value " +
                     std::to_string(i % kAudioWindowValues) + " is " + std::to_string(v[i]) +
                     ", the whole chunk's " + std::to_string(w[i]) + " (" +
                     std::to_string(r.raw_audio().size() / 4) + " samples at " +
                     std::to_string(r.sample_rate()) + " Hz, batch " +
                     std::to_string(r.batch_size()) + ", start " +
                     std::to_string(r.start_frame_idx()) + ")");
  }
}

}  // namespace
}  // namespace lipsync::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lipsync;
  if (size == 0) return 0;
  monolithic::CompositeBatchRequest request;
  if (data[0] % 4 == 0) {  // the bytes as a request, as a client could send them
    if (!request.ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;
  } else {
    fuzz::Choices pick(data + 1, size - 1);
    request = fuzz::MakeRequest(pick);
  }
  const Status checked = server::CheckCompositeRequest(request);
  fuzz::CheckRefusal(checked, "CheckCompositeRequest");
  if (!checked.ok()) return 0;
  AudioEncoder& encoder = fuzz::TinyEncoder();
  fuzz::CheckAnswer(CompositeAudioInput(encoder, request, server::Behaviour::kLipsync),
                    fuzz::WholeChunkWindows(encoder, request), request, "lipsync's rule",
                    fuzz::LipsyncTolerance(request));
  fuzz::CheckAnswer(CompositeAudioInput(encoder, request, server::Behaviour::kOld),
                    fuzz::WholeChunkGoWindows(encoder, request), request, "the Go server's rule",
                    0.0f);  // the Go server takes every chunk as 16 kHz: nothing is resampled
  return 0;
}
