// AudioFeatureStream: the audio features of a signal that arrives in pieces.
//
// What the end of the signal can still change, and so what is held back until Finish():
// - mel frame t reads samples t*200-400 .. t*200+399; it is final once they have all arrived
//   (the centred padding only touches frames that reach past the last sample);
// - encoder window k is final once its 16 mel frames are final (the last window, which may be
//   the last 16 frames of the signal, and the window count wait for the end);
// - video frame i reads embeddings up to e[i+6], so it is final once window i+6 is.
// Every value is computed by the same functions as the whole-signal path (audio_internal.h), in
// the same order of operations, so the output is the same bit for bit (the encoder runs the
// windows in other batches than the whole-signal path; ONNX Runtime's CPU kernels give each window
// the same result in any batch, which the tests check).
//
// State kept, independent of the signal's length: the pre-emphasised samples from 600 before the
// first unfinished mel frame (a few hundred samples plus the last chunk), the mel frames from the
// first unfinished window or 16 before the first unfinished mel frame (about 20), and the
// embeddings from 9 before the first unfinished video frame (about 16 rows).
#include <algorithm>
#include <string>
#include <vector>

#include "pipeline/audio/audio_internal.h"

namespace lipsync {

using namespace audio_internal;

struct AudioFeatureStream::State {
  State(AudioEncoder& e, const MelOptions& m, double f, WindowEdge w)
      : encoder(e), mel_options(m), fps(f), edge(w), frame(kFftSize) {}

  Result<Tensor> Advance(bool at_end);
  Status MakeMelFrames(bool at_end);
  Status EncodeWindows(bool at_end);
  Tensor TakeVideoFrames(bool at_end);
  void Trim();

  AudioEncoder& encoder;
  MelOptions mel_options;
  double fps;
  WindowEdge edge;
  MelColumnMaker maker;
  std::vector<double> frame;  // scratch: one mel frame's 800 samples

  // Pre-emphasised samples y_base .. samples - 1.
  std::vector<double> y;
  int64_t y_base = 0;
  int64_t samples = 0;
  float last_sample = 0.0f;
  // Mel columns (80 floats each) of frames mel_base .. mel_done - 1.
  std::vector<float> mel;
  int64_t mel_base = 0;
  int64_t mel_done = 0;
  // Embeddings (512 floats each) of windows emb_base .. windows_done - 1.
  std::vector<float> embeddings;
  int64_t emb_base = 0;
  int64_t windows_done = 0;
  int64_t frames_done = 0;
  bool finished = false;
  bool failed = false;
};

Status AudioFeatureStream::State::MakeMelFrames(bool at_end) {
  const int64_t total = at_end ? samples : -1;
  const int64_t last = at_end ? MelFrameCount(samples) : -1;
  while (at_end ? mel_done < last : FrameIsFinal(mel_done, samples, mel_options.padding)) {
    LIPSYNC_RETURN_IF_ERROR(
        GatherFrame(y, y_base, samples, total, mel_done, mel_options.padding, frame.data()));
    mel.resize(mel.size() + kMelBands);
    maker.Make(frame.data(), mel.data() + mel.size() - kMelBands, 1);
    ++mel_done;
  }
  return Status::Ok();
}

Status AudioFeatureStream::State::EncodeWindows(bool at_end) {
  // Before the end, MelWindowCount of the frames so far is a lower bound on the final count.
  const int64_t count = MelWindowCount(at_end ? mel_done : MelFrameCount(samples), fps);
  std::vector<int64_t> starts;
  for (int64_t k = windows_done; k < count; ++k) {
    int64_t start = MelWindowStart(k, fps);
    if (start + kMelWindowFrames > mel_done) {
      if (!at_end) break;
      start = mel_done - kMelWindowFrames;
    }
    starts.push_back(start);
  }
  if (starts.empty()) return Status::Ok();
  const int64_t n = static_cast<int64_t>(starts.size());
  constexpr int64_t kWindow = kMelBands * kMelWindowFrames;
  Tensor windows = Tensor::Uninitialized(DataType::kFloat32, {n, 1, kMelBands, kMelWindowFrames});
  for (int64_t i = 0; i < n; ++i) {
    if (starts[i] < mel_base) {
      return Internal("mel frame " + std::to_string(starts[i]) + " was dropped too early");
    }
    CopyMelWindow(mel.data() + (starts[i] - mel_base) * kMelBands, 1, kMelBands, 0,
                  windows.data_as<float>() + i * kWindow);
  }
  LIPSYNC_ASSIGN_OR_RETURN(Tensor out, encoder.Encode(windows));
  const float* rows = out.data_as<float>();
  embeddings.insert(embeddings.end(), rows, rows + n * kEmbeddingSize);
  windows_done += n;
  return Status::Ok();
}

Tensor AudioFeatureStream::State::TakeVideoFrames(bool at_end) {
  // Video frame i reads embeddings up to i + 6 (and, at the end, the last one).
  const int64_t end = at_end ? windows_done + 2 : std::max<int64_t>(0, windows_done - 6);
  const int64_t n = std::max<int64_t>(0, end - frames_done);
  constexpr int64_t kFrame = kFrameRows * kEmbeddingSize;
  Tensor out = Tensor::Uninitialized(DataType::kFloat32, {n, 32, 16, 16});
  for (int64_t i = 0; i < n; ++i) {
    FillFrameWindow(embeddings.data(), emb_base, windows_done, frames_done + i, edge,
                    out.data_as<float>() + i * kFrame);
  }
  frames_done += n;
  return out;
}

void AudioFeatureStream::State::Trim() {
  const int64_t keep_y = std::max<int64_t>(0, mel_done * kMelHop - kPad - 200);
  if (keep_y > y_base) {
    y.erase(y.begin(), y.begin() + (keep_y - y_base));
    y_base = keep_y;
  }
  const int64_t keep_mel = std::max<int64_t>(
      0, std::min(MelWindowStart(windows_done, fps), mel_done - kMelWindowFrames));
  if (keep_mel > mel_base) {
    mel.erase(mel.begin(), mel.begin() + (keep_mel - mel_base) * kMelBands);
    mel_base = keep_mel;
  }
  const int64_t keep_emb = std::max<int64_t>(0, frames_done - kFrameRows / 2 - 1);
  if (keep_emb > emb_base) {
    embeddings.erase(embeddings.begin(),
                     embeddings.begin() + (keep_emb - emb_base) * kEmbeddingSize);
    emb_base = keep_emb;
  }
}

Result<Tensor> AudioFeatureStream::State::Advance(bool at_end) {
  LIPSYNC_RETURN_IF_ERROR(MakeMelFrames(at_end));
  LIPSYNC_RETURN_IF_ERROR(EncodeWindows(at_end));
  Tensor frames = TakeVideoFrames(at_end);
  Trim();
  return frames;
}

AudioFeatureStream::AudioFeatureStream(AudioEncoder& encoder, const MelOptions& mel, double fps,
                                       WindowEdge edge)
    : state_(std::make_unique<State>(encoder, mel, fps, edge)) {}

AudioFeatureStream::~AudioFeatureStream() = default;

int64_t AudioFeatureStream::frames_emitted() const { return state_->frames_done; }

Result<Tensor> AudioFeatureStream::Push(const float* pcm, size_t count) {
  State& s = *state_;
  if (s.finished) return FailedPrecondition("audio stream: Push() after Finish()");
  if (s.failed) return FailedPrecondition("audio stream: Push() after an earlier error");
  if (count > 0 && pcm == nullptr) return InvalidArgument("audio stream: no sample data");
  LIPSYNC_RETURN_IF_ERROR(CheckFps(s.fps));
  Status added = Preemphasise(pcm, count, s.last_sample, s.samples, &s.y);
  if (!added.ok()) {
    s.failed = true;
    return added;
  }
  if (count > 0) s.last_sample = pcm[count - 1];
  s.samples += static_cast<int64_t>(count);
  auto frames = s.Advance(false);
  if (!frames.ok()) s.failed = true;
  return frames;
}

Result<Tensor> AudioFeatureStream::Finish() {
  State& s = *state_;
  if (s.finished) return FailedPrecondition("audio stream: Finish() called twice");
  if (s.failed) return FailedPrecondition("audio stream: Finish() after an earlier error");
  LIPSYNC_RETURN_IF_ERROR(CheckFps(s.fps));
  s.finished = true;
  LIPSYNC_RETURN_IF_ERROR(CheckSampleCount(s.samples, s.mel_options.padding));
  LIPSYNC_RETURN_IF_ERROR(CheckMelFrameCount(MelFrameCount(s.samples)));
  return s.Advance(true);
}

}  // namespace lipsync
