// Audio features for SyncTalk_2D-style models ('ave' mode): speech in, one [32,16,16] audio window
// per 25 fps video frame out.
//
//   auto pcm = lipsync::DecodeAudioFile("speech.m4a");           // 16 kHz mono float
//   auto mel = lipsync::MelSpectrogram(pcm->data(), pcm->size()); // [80, T]
//   auto encoder = lipsync::AudioEncoder::Create("audio_encoder.onnx");
//   auto windows = lipsync::ComputeAudioWindows(**encoder, *mel); // [frames, 32, 16, 16]
//
// Streaming: AudioFeatureStream takes PCM in chunks of any size and hands out each video frame's
// window as soon as the audio that decides it has arrived; Finish() flushes the rest. The windows
// are identical to those of the whole signal: bit for bit when the encoder's engine gives a window
// the same result whatever batch it is in (ONNX Runtime's CPU provider does; a GPU provider that
// picks kernels by batch size may differ in the last bits).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lipsync/engine.h"
#include "lipsync/status.h"
#include "lipsync/tensor.h"

namespace lipsync {

constexpr int kAudioSampleRate = 16000;  // what the features are defined on
constexpr int kMelBands = 80;
constexpr int kMelHop = 200;          // samples per mel frame (80 mel frames per second)
constexpr int kMelWindowFrames = 16;  // mel frames per encoder input window
// Values in one video frame's UNet audio window [32, 16, 16].
constexpr int64_t kAudioWindowValues = 32 * 16 * 16;

// Decodes any audio file FFmpeg reads (WAV, MP3, AAC/M4A, FLAC, the audio of a video, ...) to mono
// float PCM at `sample_rate`, downmixed and resampled. NotFound for a missing file, DataLoss for
// one that does not decode, InvalidArgument for one without an audio stream or without samples.
Result<std::vector<float>> DecodeAudioFile(const std::string& path,
                                           int sample_rate = kAudioSampleRate);

// Resamples mono float PCM (FFmpeg's resampler), e.g. 44.1 kHz test signals to 16 kHz.
Result<std::vector<float>> ResampleAudio(const std::vector<float>& pcm, int from_rate, int to_rate);

// How the centred STFT pads the signal's ends by n_fft/2 samples: zeros (current librosa) or a
// reflection (older librosa).
enum class StftPadding { kZero, kReflect };

struct MelOptions {
  StftPadding padding = StftPadding::kZero;
};

// The normalised log-mel spectrogram of 16 kHz mono PCM as the model spec defines it: float32
// [80, T] with T = 1 + samples / 200, values in [-4, 4]. InvalidArgument for empty input (and, with
// reflect padding, input too short to reflect).
Result<Tensor> MelSpectrogram(const float* pcm, size_t count, const MelOptions& options = {});

// Number of encoder input windows W for T mel frames at `fps` (spec section 2, step 6):
// int((T - 16) / 80 * fps) + 2, in floating point as upstream computes it. Zero when the audio is
// too short for one window (T < 16, under 3000 samples) or fps is not a positive rate.
int64_t MelWindowCount(int64_t mel_frames, double fps = 25.0);
// Number of video frames rendered for T mel frames: the embedding sequence of step 8, W + 2
// (zero when W is zero).
int64_t VideoFrameCount(int64_t mel_frames, double fps = 25.0);

// The encoder's input windows [W, 1, 80, 16] (each mel[:, start : start + 16] with
// start = int(80 * k / fps), the last 16 frames when it runs past the end).
Result<Tensor> MelWindows(const Tensor& mel, double fps = 25.0);

// The AudioEncoder (13 conv blocks, [B,1,80,16] -> [B,512]) run through an Engine from its own
// ONNX file.
class AudioEncoder {
 public:
  // On `options`' backend. lipsync's own backends ("cuda", "reference") compile SyncTalk_2D's
  // encoder (Conv, BatchNormalization, Relu, Add and the final Flatten to [N,512]); when one of
  // them cannot compile an encoder, it runs on ONNX Runtime's CPU provider instead (it is small:
  // 93 M multiply-adds per window) and fallback_reason() says why.
  static Result<std::unique_ptr<AudioEncoder>> Create(const std::string& onnx_path,
                                                      const EngineOptions& options = {});
  // windows [B,1,80,16] -> embeddings [B,512]; any B >= 1 (split into the engine's max batch).
  Result<Tensor> Encode(const Tensor& windows);
  Engine& engine() { return *engine_; }
  // Why the encoder runs on ONNX Runtime's CPU provider instead of the backend asked for; empty
  // when it runs on that backend.
  const std::string& fallback_reason() const { return fallback_reason_; }

 private:
  AudioEncoder(std::unique_ptr<Engine> engine, std::string fallback_reason)
      : engine_(std::move(engine)), fallback_reason_(std::move(fallback_reason)) {}
  std::unique_ptr<Engine> engine_;
  std::string fallback_reason_;
};

// Rows outside the embedding sequence: zeros (upstream) or the nearest edge row (one fork).
enum class WindowEdge { kZeros, kRepeat };

// The UNet's audio input from the encoder's embeddings [W, 512] (spec section 2, steps 8 and 9):
// the sequence s = [e0] + e + [e_last] (W + 2 rows, one per video frame), and for video frame i the
// rows s[i-8 .. i+7] (out-of-range rows per `edge`) reshaped row-major to [32, 16, 16].
// Result: [W + 2, 32, 16, 16].
Result<Tensor> AudioWindowsFromEmbeddings(const Tensor& embeddings,
                                          WindowEdge edge = WindowEdge::kZeros);

// Step 8's sequence from the encoder's embeddings [W, 512]: [e0] + e + [e_last], float32
// [W + 2, 512], one row per video frame (what a Python server package's aud_ave.npy holds, and
// what AudioWindowsFromSequence reads).
Result<Tensor> FeatureSequenceFromEmbeddings(const Tensor& embeddings);

// A per-frame feature sequence from a .npy file (e.g. an aud_ave.npy): float32 [F, 512] with
// F >= 1 and every value finite, or an error naming the file.
Result<Tensor> LoadFeatureSequence(const std::string& path);

// Windows of chosen video frames from a sequence that already holds one row per video frame
// (float32 [F, 512], e.g. a precomputed aud_ave.npy, which is step 8's sequence): frame i reads
// rows i-8 .. i+7 (out-of-range rows per `edge`) reshaped to [32, 16, 16]. Result: [frames, 32, 16,
// 16].
Result<Tensor> AudioWindowsFromSequence(const Tensor& sequence, const std::vector<int64_t>& frames,
                                        WindowEdge edge = WindowEdge::kZeros);

// The whole path: mel -> encoder windows -> embeddings -> UNet audio windows [frames, 32, 16, 16].
Result<Tensor> ComputeAudioWindows(AudioEncoder& encoder, const Tensor& mel, double fps = 25.0,
                                   WindowEdge edge = WindowEdge::kZeros);

// Incremental features: Push() 16 kHz PCM in chunks of any size; each call returns the windows
// [n, 32, 16, 16] of the video frames (in order, continuing the count) that the audio so far fully
// decides; Finish() returns the remaining ones. The concatenation equals ComputeAudioWindows() on
// the whole signal.
class AudioFeatureStream {
 public:
  AudioFeatureStream(AudioEncoder& encoder, const MelOptions& mel = {}, double fps = 25.0,
                     WindowEdge edge = WindowEdge::kZeros);
  ~AudioFeatureStream();
  AudioFeatureStream(const AudioFeatureStream&) = delete;
  AudioFeatureStream& operator=(const AudioFeatureStream&) = delete;

  Result<Tensor> Push(const float* pcm, size_t count);
  Result<Tensor> Finish();
  int64_t frames_emitted() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace lipsync
