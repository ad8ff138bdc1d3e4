// `lipsync features`: audio file -> 16 kHz PCM -> mel spectrogram -> (with an encoder) the UNet's
// audio windows, each written as .npy. --chunk runs the windows through the streaming
// AudioFeatureStream instead, in pieces of that many samples (for checking the stream).

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "commands.h"
#include "core/platform.h"
#include "engine_flags.h"
#include "lipsync/audio.h"
#include "lipsync/npy.h"

namespace lipsync::cli {
namespace {

struct FeaturesArgs {
  std::string audio;
  std::string encoder;
  std::string mel_out;
  std::string out;
  std::string sequence_out;
  std::string pcm_out;
  std::string padding = "zero";
  std::string edge = "zeros";
  double fps = 25.0;
  int threads = 0;
  int64_t max_batch = 64;
  int64_t chunk = 0;
  int64_t chunk_seed = -1;
  bool json = false;
};

double MsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// Writes through a temporary file in the same folder, so a failure leaves no partial file.
Status SaveNpyAtomic(const std::string& path, const TensorView& tensor) {
  const std::string tmp = path + ".tmp" + std::to_string(platform::ProcessId());
  Status saved = SaveNpy(tmp, tensor);
  std::error_code ec;
  if (saved.ok()) {
    std::filesystem::rename(tmp, path, ec);
    if (!ec) return Status::Ok();
    saved = Internal("cannot write '" + path + "': " + ec.message());
  }
  std::filesystem::remove(tmp, ec);
  return saved;
}

// The stream's output for the whole signal, fed in chunks of `chunk` samples (random sizes from
// 1 to `chunk` when `seed` >= 0).
Result<Tensor> StreamWindows(AudioEncoder& encoder, const std::vector<float>& pcm,
                             const MelOptions& mel, double fps, WindowEdge edge, int64_t chunk,
                             int64_t seed) {
  AudioFeatureStream stream(encoder, mel, fps, edge);
  std::vector<Tensor> parts;
  std::mt19937_64 rng(static_cast<uint64_t>(seed < 0 ? 0 : seed));
  std::uniform_int_distribution<int64_t> size(1, chunk);
  for (size_t pos = 0; pos < pcm.size();) {
    const size_t n = std::min(pcm.size() - pos, static_cast<size_t>(seed >= 0 ? size(rng) : chunk));
    LIPSYNC_ASSIGN_OR_RETURN(Tensor part, stream.Push(pcm.data() + pos, n));
    parts.push_back(std::move(part));
    pos += n;
  }
  LIPSYNC_ASSIGN_OR_RETURN(Tensor last, stream.Finish());
  parts.push_back(std::move(last));
  int64_t frames = 0;
  for (const auto& p : parts) frames += p.shape()[0];
  Tensor all = Tensor::Uninitialized(DataType::kFloat32, {frames, 32, 16, 16});
  auto* dst = static_cast<char*>(all.data());
  for (const auto& p : parts) {
    std::memcpy(dst, p.data(), p.byte_size());
    dst += p.byte_size();
  }
  return all;
}

int RunFeatures(const FeaturesArgs& args) {
  if (args.mel_out.empty() && args.out.empty() && args.pcm_out.empty() &&
      args.sequence_out.empty()) {
    return ReportError(
        InvalidArgument("nothing to write: give --mel-out, --out, --sequence-out or --pcm-out"));
  }
  if ((!args.out.empty() || !args.sequence_out.empty()) && args.encoder.empty()) {
    return ReportError(InvalidArgument(std::string(args.out.empty() ? "--sequence-out" : "--out") +
                                       " needs --encoder (the audio encoder's ONNX file)"));
  }
  if (args.chunk < 0) return ReportError(InvalidArgument("--chunk must not be negative"));
  MelOptions mel_options;
  mel_options.padding = args.padding == "reflect" ? StftPadding::kReflect : StftPadding::kZero;
  const WindowEdge edge = args.edge == "repeat" ? WindowEdge::kRepeat : WindowEdge::kZeros;

  // The encoder is loaded first, so that a bad model fails before the work.
  std::unique_ptr<AudioEncoder> encoder;
  if (!args.encoder.empty()) {
    EngineOptions options;
    options.intra_op_threads = args.threads;
    options.max_batch = args.max_batch;
    auto created = AudioEncoder::Create(args.encoder, options);
    if (!created.ok()) return ReportError(created.status());
    encoder = std::move(*created);
  }

  auto t0 = std::chrono::steady_clock::now();
  auto pcm = DecodeAudioFile(args.audio);
  if (!pcm.ok()) return ReportError(pcm.status());
  const double decode_ms = MsSince(t0);

  t0 = std::chrono::steady_clock::now();
  auto mel = MelSpectrogram(pcm->data(), pcm->size(), mel_options);
  if (!mel.ok()) return ReportError(mel.status().WithContext("'" + args.audio + "'"));
  const double mel_ms = MsSince(t0);

  Tensor windows;
  double encode_ms = 0;
  if (encoder) {
    t0 = std::chrono::steady_clock::now();
    auto computed = args.chunk > 0 ? StreamWindows(*encoder, *pcm, mel_options, args.fps, edge,
                                                   args.chunk, args.chunk_seed)
                                   : ComputeAudioWindows(*encoder, *mel, args.fps, edge);
    if (!computed.ok()) return ReportError(computed.status().WithContext("'" + args.audio + "'"));
    windows = std::move(*computed);
    encode_ms = MsSince(t0);
  }
  Tensor sequence;
  if (!args.sequence_out.empty()) {
    auto mel_windows = MelWindows(*mel, args.fps);
    if (!mel_windows.ok()) return ReportError(mel_windows.status());
    auto embeddings = encoder->Encode(*mel_windows);
    if (!embeddings.ok()) return ReportError(embeddings.status());
    auto rows = FeatureSequenceFromEmbeddings(*embeddings);
    if (!rows.ok()) return ReportError(rows.status());
    sequence = std::move(*rows);
  }

  const Tensor pcm_tensor = [&] {
    Tensor t = Tensor::Uninitialized(DataType::kFloat32, {static_cast<int64_t>(pcm->size())});
    std::memcpy(t.data(), pcm->data(), pcm->size() * sizeof(float));
    return t;
  }();
  std::vector<std::pair<std::string, const Tensor*>> files = {{args.pcm_out, &pcm_tensor},
                                                              {args.mel_out, &*mel},
                                                              {args.out, &windows},
                                                              {args.sequence_out, &sequence}};
  for (const auto& [path, tensor] : files) {
    if (path.empty()) continue;
    Status saved = SaveNpyAtomic(path, tensor->view());
    if (!saved.ok()) return ReportError(saved);
  }

  const int64_t mel_frames = mel->shape()[1];
  const double seconds = static_cast<double>(pcm->size()) / kAudioSampleRate;
  if (args.json) {
    nlohmann::json j = {{"samples", pcm->size()},
                        {"seconds", seconds},
                        {"mel_frames", mel_frames},
                        {"encoder_windows", MelWindowCount(mel_frames, args.fps)},
                        {"video_frames", VideoFrameCount(mel_frames, args.fps)},
                        {"decode_ms", decode_ms},
                        {"mel_ms", mel_ms},
                        {"encode_ms", encode_ms}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("%s: %.2f s (%zu samples at 16 kHz), %lld mel frames, %lld video frames\n",
                args.audio.c_str(), seconds, pcm->size(), static_cast<long long>(mel_frames),
                static_cast<long long>(VideoFrameCount(mel_frames, args.fps)));
    std::printf("decode %.1f ms, mel %.1f ms", decode_ms, mel_ms);
    if (encoder) std::printf(", encoder and windows %.1f ms", encode_ms);
    std::printf("\n");
  }
  return 0;
}

}  // namespace

void AddFeaturesCommand(CLI::App& app, int* exit_code) {
  auto* cmd = app.add_subcommand(
      "features", "Audio file -> mel spectrogram -> the UNet's audio windows (.npy)");
  auto args = std::make_shared<FeaturesArgs>();
  cmd->add_option("--audio,-a", args->audio, "audio or video file (WAV, MP3, M4A, FLAC, ...)")
      ->required();
  cmd->add_option("--encoder,-e", args->encoder, "audio encoder ONNX file (needed for --out)");
  cmd->add_option("--mel-out", args->mel_out, "write the mel spectrogram [80,T] .npy");
  cmd->add_option("--out,-o", args->out, "write the audio windows [frames,32,16,16] .npy");
  cmd->add_option("--sequence-out", args->sequence_out,
                  "write the per-frame feature sequence [frames,512] .npy (an avatar's "
                  "audio_features)");
  cmd->add_option("--pcm-out", args->pcm_out, "write the decoded 16 kHz mono PCM .npy");
  cmd->add_option("--padding", args->padding, "STFT end padding: zero | reflect")
      ->check(CLI::IsMember({"zero", "reflect"}))
      ->capture_default_str();
  cmd->add_option("--edge", args->edge, "rows outside the embeddings: zeros | repeat")
      ->check(CLI::IsMember({"zeros", "repeat"}))
      ->capture_default_str();
  cmd->add_option("--fps", args->fps, "video frame rate")->capture_default_str();
  cmd->add_option("--threads", args->threads, "encoder CPU threads (0: one per core)")
      ->capture_default_str();
  cmd->add_option("--max-batch", args->max_batch, "largest encoder batch")->capture_default_str();
  cmd->add_option("--chunk", args->chunk,
                  "compute the windows with the streaming path, this many samples per push");
  cmd->add_option("--chunk-seed", args->chunk_seed,
                  "with --chunk: random chunk sizes from 1 to --chunk, from this seed");
  cmd->add_flag("--json", args->json, "print the summary as JSON");
  cmd->callback([=] { *exit_code = RunFeatures(*args); });
}

}  // namespace lipsync::cli
