// Live audio against the whole signal: the bytes choose a signal (silence, int16 speech-like
// samples at any level, or raw float bits that may hold NaN, infinities and huge values), the mel
// padding, the window edge and the frame rate, and the sizes of the chunks it arrives in (empty
// chunks, single samples, mel hops, video frames, seconds). AudioFeatureStream fed those chunks
// must give the windows ComputeAudioWindows gives for the whole signal, bit for bit (the encoder
// runs on ONNX Runtime's CPU provider, whose results do not depend on the batch), or refuse where
// the whole path refuses, with a short message. A live session is this stream: a difference is a
// wrong mouth that no test of whole files would show.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "fuzz_check.h"
#include "fuzz_input.h"
#include "lipsync/audio.h"
#include "tiny_encoder.h"

namespace lipsync::fuzz {
namespace {

// Up to 4 s at 16 kHz, mostly short enough to reach the edges (no window, one window).
std::vector<float> MakeSignal(Choices& pick) {
  const size_t n =
      static_cast<size_t>(pick.OneIn(2) ? pick.PickWide(0, 4000) : pick.PickWide(0, 64000));
  const int kind = pick.Pick(0, 3);
  const float level = pick.Of({1.0f, 1.0f / 32768, 1e-3f, 0.5f, 4.0f, 1e30f});
  std::vector<float> pcm(n, 0.0f);
  const uint8_t* bytes = pick.rest();
  const size_t have = pick.rest_size();
  if (kind == 0 || have == 0) return pcm;  // silence
  for (size_t i = 0; i < n; ++i) {
    if (kind == 1) {
      pcm[i] = level * Int16Sample(bytes, have, i);
    } else if (kind == 2) {
      pcm[i] = FloatBitsSample(bytes, have, i);
    } else {  // a tone whose pitch the bytes change every 10 ms
      const double f = 80.0 + 20.0 * bytes[(i / 160) % have];
      pcm[i] = level * static_cast<float>(
                           std::sin(2 * M_PI * f * static_cast<double>(i) / kAudioSampleRate));
    }
  }
  return pcm;
}

// Chunk sizes, cycled until the signal is used up.
std::vector<size_t> MakeChunks(Choices& pick) {
  std::vector<size_t> sizes(static_cast<size_t>(pick.Pick(1, 6)));
  for (size_t& s : sizes) {
    s = pick.Of<size_t>({0, 1, 2, 199, 200, 201, 640, 1000, 3200, 16000, 0});
    if (s == 0 && pick.OneIn(2)) s = static_cast<size_t>(pick.PickWide(0, 20000));
  }
  return sizes;
}

std::string Describe(const Status& s) { return s.ok() ? "accepted" : s.ToString(); }

}  // namespace
}  // namespace lipsync::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lipsync;
  fuzz::Choices pick(data, size);
  MelOptions mel;
  mel.padding = pick.OneIn(4) ? StftPadding::kReflect : StftPadding::kZero;
  const WindowEdge edge = pick.OneIn(3) ? WindowEdge::kRepeat : WindowEdge::kZeros;
  const double fps = pick.Of({25.0, 25.0, 25.0, 30.0, 24.0, 50.0, 12.5, 0.0});
  const std::vector<size_t> chunks = fuzz::MakeChunks(pick);
  const std::vector<float> pcm = fuzz::MakeSignal(pick);
  AudioEncoder& encoder = fuzz::TinyEncoder();

  // The whole signal.
  Result<Tensor> whole = MelSpectrogram(pcm.data(), pcm.size(), mel);
  if (whole.ok()) whole = ComputeAudioWindows(encoder, *whole, fps, edge);
  fuzz::CheckRefusal(whole.status(), "the whole signal's windows");

  // The same signal in chunks.
  AudioFeatureStream stream(encoder, mel, fps, edge);
  std::vector<float> got;
  int64_t frames = 0;
  auto take = [&](const Result<Tensor>& out) {
    if (!out.ok()) return false;
    const int64_t n = out->shape().empty() ? 0 : out->shape()[0];
    if (n > 0 && out->shape() != Shape({n, 32, 16, 16})) {
      fuzz::Broken("AudioFeatureStream", "windows of shape " + ShapeToString(out->shape()));
    }
    got.insert(got.end(), out->data_as<float>(), out->data_as<float>() + n * kAudioWindowValues);
    frames += n;
    return true;
  };
  Status streamed = Status::Ok();
  size_t at = 0;
  for (size_t i = 0; at < pcm.size(); ++i) {
    size_t n = std::min(chunks[i % chunks.size()], pcm.size() - at);
    if (i >= 64 * chunks.size()) n = pcm.size() - at;  // chunks of 0 (or 1) forever: the rest
    Result<Tensor> out = stream.Push(pcm.data() + at, n);
    if (!take(out)) {
      streamed = out.status();
      break;
    }
    at += n;
  }
  if (streamed.ok()) {
    Result<Tensor> out = stream.Finish();
    if (!take(out)) streamed = out.status();
  }
  fuzz::CheckRefusal(streamed, "AudioFeatureStream");

  if (whole.ok() != streamed.ok()) {
    fuzz::Broken("AudioFeatureStream", "the whole signal (" + std::to_string(pcm.size()) +
                                           " samples) was " + fuzz::Describe(whole.status()) +
                                           ", the stream " + fuzz::Describe(streamed));
  }
  static const bool verbose = std::getenv("LIPSYNC_FUZZ_VERBOSE") != nullptr;
  if (verbose) {
    std::fprintf(stderr, "  %zu samples, fps %g, %zu chunk sizes: %s\n", pcm.size(), fps,
                 chunks.size(),
                 whole.ok() ? (std::to_string(frames) + " frames").c_str()
                            : whole.status().message().c_str());
  }
  if (!whole.ok()) return 0;
  const int64_t expected = whole->shape()[0];
  if (frames != expected || stream.frames_emitted() != expected) {
    fuzz::Broken("AudioFeatureStream", "gave " + std::to_string(frames) + " frames (counted " +
                                           std::to_string(stream.frames_emitted()) +
                                           "), the whole signal " + std::to_string(expected));
  }
  if (std::memcmp(got.data(), whole->data(), whole->byte_size()) != 0) {
    for (size_t i = 0; i < got.size(); ++i) {
      if (std::memcmp(&got[i], whole->data_as<float>() + i, sizeof(float)) == 0) continue;
      fuzz::Broken("AudioFeatureStream",
                   "frame " + std::to_string(i / kAudioWindowValues) + " value " +
                       std::to_string(i % kAudioWindowValues) + " is " + std::to_string(got[i]) +
                       ", the whole signal's " + std::to_string(whole->data_as<float>()[i]));
    }
  }
  return 0;
}
