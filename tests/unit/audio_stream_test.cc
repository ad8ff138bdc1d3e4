// AudioEncoder on the tiny test encoders, and AudioFeatureStream against the whole-signal path:
// the same windows bit for bit, whatever the chunk sizes, emitted as soon as they are final.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "lipsync/audio.h"

namespace lipsync {
namespace {

const std::string kDir = LIPSYNC_TEST_DATA_DIR;

std::unique_ptr<AudioEncoder> LoadEncoder(const std::string& name, int64_t max_batch = 64) {
  EngineOptions options;
  options.intra_op_threads = 1;
  options.max_batch = max_batch;
  auto encoder = AudioEncoder::Create(kDir + "/" + name, options);
  EXPECT_TRUE(encoder.ok()) << encoder.status().ToString();
  return encoder.ok() ? std::move(*encoder) : nullptr;
}

// Speech-like test audio: noise and two tones under a syllable-rate envelope, with silent gaps.
std::vector<float> TestSignal(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> noise(0.0f, 0.1f);
  std::vector<float> pcm(n);
  for (size_t i = 0; i < n; ++i) {
    const double t = static_cast<double>(i) / kAudioSampleRate;
    const double envelope = std::max(0.0, std::sin(2 * M_PI * 3.7 * t));
    pcm[i] = static_cast<float>(
        envelope * (0.3 * std::sin(2 * M_PI * 220 * t) + 0.1 * std::sin(2 * M_PI * 1870 * t)) +
        envelope * noise(rng));
  }
  return pcm;
}

Tensor RandomWindows(int64_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-4.0f, 4.0f);
  Tensor t(DataType::kFloat32, {count, 1, 80, 16});
  for (int64_t i = 0; i < t.element_count(); ++i) t.data_as<float>()[i] = u(rng);
  return t;
}

bool SameBytes(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), a.byte_size()) == 0;
}

TEST(AudioEncoderTest, SplitsAtMaxBatchAndPadsFixedBatches) {
  auto big = LoadEncoder("tiny_audio_encoder.onnx");
  auto small = LoadEncoder("tiny_audio_encoder.onnx", 3);
  auto fixed = LoadEncoder("tiny_audio_encoder_fixed4.onnx");
  ASSERT_TRUE(big && small && fixed);
  const Tensor windows = RandomWindows(10, 1);
  auto a = big->Encode(windows);
  auto b = small->Encode(windows);
  auto c = fixed->Encode(windows);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok())
      << a.status().ToString() << b.status().ToString() << c.status().ToString();
  ASSERT_EQ(a->shape(), (Shape{10, 512}));
  for (int64_t i = 0; i < a->element_count(); ++i) {
    ASSERT_NEAR(a->data_as<float>()[i], b->data_as<float>()[i], 1e-6) << i;
    ASSERT_NEAR(a->data_as<float>()[i], c->data_as<float>()[i], 1e-6) << i;
  }
  // Each embedding depends on its own window only.
  auto one = big->Encode(RandomWindows(1, 1));
  ASSERT_TRUE(one.ok());
  for (int64_t i = 0; i < 512; ++i)
    ASSERT_NEAR(one->data_as<float>()[i], a->data_as<float>()[i], 1e-6);
}

// An encoder lipsync's own backends cannot compile (the tiny one's MatMul; the real encoder's
// operators they do compile) runs on ONNX Runtime's CPU provider, with the results of asking for
// that provider, and says why.
TEST(AudioEncoderTest, NativeBackendFallsBackToOnnxRuntimeCpu) {
  EngineOptions native;
  native.backend = "reference";
  native.intra_op_threads = 1;
  auto fallen_back = AudioEncoder::Create(kDir + "/tiny_audio_encoder.onnx", native);
  ASSERT_TRUE(fallen_back.ok()) << fallen_back.status().ToString();
  EXPECT_EQ((*fallen_back)->engine().info().backend, "ort");
  EXPECT_EQ((*fallen_back)->engine().info().provider, "cpu");
  EXPECT_NE((*fallen_back)->fallback_reason().find("the reference backend cannot run it"),
            std::string::npos)
      << (*fallen_back)->fallback_reason();
  auto ort = LoadEncoder("tiny_audio_encoder.onnx");
  ASSERT_TRUE(ort);
  EXPECT_TRUE(ort->fallback_reason().empty());
  const Tensor windows = RandomWindows(5, 7);
  auto a = (*fallen_back)->Encode(windows);
  auto b = ort->Encode(windows);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(SameBytes(*a, *b));
  // Other failures are not hidden by the fallback.
  EXPECT_EQ(AudioEncoder::Create(kDir + "/missing.onnx", native).status().code(),
            StatusCode::kNotFound);
}

TEST(AudioEncoderTest, RejectsOtherModelsAndShapes) {
  auto unet = AudioEncoder::Create(kDir + "/tiny.onnx");
  ASSERT_FALSE(unet.ok());
  EXPECT_EQ(unet.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(unet.status().message().find("not an audio encoder"), std::string::npos);
  EXPECT_EQ(AudioEncoder::Create(kDir + "/missing.onnx").status().code(), StatusCode::kNotFound);
  auto encoder = LoadEncoder("tiny_audio_encoder.onnx");
  ASSERT_TRUE(encoder);
  EXPECT_FALSE(encoder->Encode(Tensor(DataType::kFloat32, {2, 1, 80, 15})).ok());
  EXPECT_FALSE(encoder->Encode(Tensor(DataType::kFloat32, {0, 1, 80, 16})).ok());
  EXPECT_FALSE(encoder->Encode(Tensor(DataType::kFloat32, {80, 16})).ok());
}

struct StreamCase {
  size_t samples;
  StftPadding padding;
  WindowEdge edge;
};

// Pushes `pcm` in chunks (`chunk` samples, or random sizes up to `chunk` with a seed) and joins
// the pieces. `emitted_before_finish` reports how many frames came out before Finish().
Result<Tensor> Streamed(AudioEncoder& encoder, const std::vector<float>& pcm, const StreamCase& c,
                        size_t chunk, int seed, int64_t* emitted_before_finish = nullptr) {
  MelOptions mel;
  mel.padding = c.padding;
  AudioFeatureStream stream(encoder, mel, 25.0, c.edge);
  std::vector<float> joined;
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::uniform_int_distribution<size_t> size(1, chunk);
  int64_t frames = 0;
  auto add = [&](const Tensor& part) {
    EXPECT_EQ(part.shape().size(), 4u);
    const float* p = part.data_as<float>();
    joined.insert(joined.end(), p, p + part.element_count());
    frames += part.shape()[0];
  };
  for (size_t pos = 0; pos < pcm.size();) {
    const size_t n = std::min(pcm.size() - pos, seed >= 0 ? size(rng) : chunk);
    LIPSYNC_ASSIGN_OR_RETURN(Tensor part, stream.Push(pcm.data() + pos, n));
    add(part);
    pos += n;
    EXPECT_EQ(stream.frames_emitted(), frames);
  }
  if (emitted_before_finish) *emitted_before_finish = frames;
  LIPSYNC_ASSIGN_OR_RETURN(Tensor last, stream.Finish());
  add(last);
  Tensor out = Tensor::Uninitialized(DataType::kFloat32, {frames, 32, 16, 16});
  std::memcpy(out.data(), joined.data(), joined.size() * sizeof(float));
  return out;
}

Result<Tensor> Whole(AudioEncoder& encoder, const std::vector<float>& pcm, const StreamCase& c) {
  MelOptions mel;
  mel.padding = c.padding;
  LIPSYNC_ASSIGN_OR_RETURN(Tensor spectrogram, MelSpectrogram(pcm.data(), pcm.size(), mel));
  return ComputeAudioWindows(encoder, spectrogram, 25.0, c.edge);
}

TEST(AudioStream, ChunkedEqualsWholeSignalBitForBit) {
  auto encoder = LoadEncoder("tiny_audio_encoder.onnx");
  ASSERT_TRUE(encoder);
  const std::vector<StreamCase> cases = {
      {16000 * 3 + 123, StftPadding::kZero, WindowEdge::kZeros},
      {16000 * 3 + 123, StftPadding::kReflect, WindowEdge::kRepeat},
      {16000 * 2, StftPadding::kZero, WindowEdge::kRepeat},
      {3000 + 3 * 200, StftPadding::kReflect, WindowEdge::kZeros},  // T = 19: the short-count case
  };
  for (const auto& c : cases) {
    const auto pcm = TestSignal(c.samples, static_cast<uint32_t>(c.samples));
    auto whole = Whole(*encoder, pcm, c);
    ASSERT_TRUE(whole.ok()) << whole.status().ToString();
    for (auto [chunk, seed] : std::vector<std::pair<size_t, int>>{
             {1, -1}, {7, -1}, {160, -1}, {3200, -1}, {c.samples, -1}, {5000, 11}, {50, 12}}) {
      auto streamed = Streamed(*encoder, pcm, c, chunk, seed);
      ASSERT_TRUE(streamed.ok()) << streamed.status().ToString();
      ASSERT_TRUE(SameBytes(*whole, *streamed))
          << c.samples << " samples, chunk " << chunk << " seed " << seed << ": whole "
          << ShapeToString(whole->shape()) << ", streamed " << ShapeToString(streamed->shape());
    }
  }
}

// Every length from just too short to a second, through each end case of the last window.
TEST(AudioStream, EveryShortLengthMatches) {
  auto encoder = LoadEncoder("tiny_audio_encoder.onnx");
  ASSERT_TRUE(encoder);
  const auto signal = TestSignal(16000, 5);
  for (size_t n = 2950; n <= 16000; n += 47) {
    const std::vector<float> pcm(signal.begin(), signal.begin() + n);
    for (StftPadding padding : {StftPadding::kZero, StftPadding::kReflect}) {
      const StreamCase c{n, padding, WindowEdge::kZeros};
      auto whole = Whole(*encoder, pcm, c);
      auto streamed = Streamed(*encoder, pcm, c, 333, -1);
      ASSERT_EQ(whole.ok(), streamed.ok()) << n << " samples";
      if (!whole.ok()) {
        EXPECT_EQ(whole.status().code(), streamed.status().code());
        EXPECT_LT(n, 3000u);
        continue;
      }
      ASSERT_TRUE(SameBytes(*whole, *streamed)) << n << " samples";
    }
  }
}

// The frames that come out before Finish(): all but those the end of the signal can change.
TEST(AudioStream, EmitsFramesAsSoonAsTheyAreFinal) {
  auto encoder = LoadEncoder("tiny_audio_encoder.onnx");
  ASSERT_TRUE(encoder);
  const size_t n = 16000 * 4;
  const auto pcm = TestSignal(n, 9);
  int64_t before = 0;
  const StreamCase c{n, StftPadding::kZero, WindowEdge::kZeros};
  auto streamed = Streamed(*encoder, pcm, c, 320, -1, &before);
  ASSERT_TRUE(streamed.ok());
  const int64_t total = streamed->shape()[0];
  EXPECT_EQ(total, VideoFrameCount(1 + static_cast<int64_t>(n) / 200));
  // The last 8 frames read the last window or the sequence's end; a few more wait for the mel
  // frames that the padding at the end decides.
  EXPECT_GE(before, total - 12);
  EXPECT_LE(before, total - 8);

  // One second in: frames up to about 1 s minus the look-ahead (7 frames and a window) are out.
  MelOptions mel;
  AudioFeatureStream stream(*encoder, mel);
  auto part = stream.Push(pcm.data(), 16000);
  ASSERT_TRUE(part.ok());
  EXPECT_GE(part->shape()[0], 25 - 12);
  EXPECT_EQ(stream.frames_emitted(), part->shape()[0]);
}

TEST(AudioStream, Errors) {
  auto encoder = LoadEncoder("tiny_audio_encoder.onnx");
  ASSERT_TRUE(encoder);
  {
    AudioFeatureStream stream(*encoder);
    EXPECT_EQ(stream.Finish().status().code(), StatusCode::kInvalidArgument);  // no audio
    EXPECT_EQ(stream.Finish().status().code(), StatusCode::kFailedPrecondition);
  }
  {
    AudioFeatureStream stream(*encoder);
    std::vector<float> pcm(2000, 0.1f);
    ASSERT_TRUE(stream.Push(pcm.data(), pcm.size()).ok());
    auto short_audio = stream.Finish();
    ASSERT_FALSE(short_audio.ok());
    EXPECT_NE(short_audio.status().message().find("too short"), std::string::npos);
    EXPECT_EQ(stream.Push(pcm.data(), 1).status().code(), StatusCode::kFailedPrecondition);
  }
  {
    AudioFeatureStream stream(*encoder);
    std::vector<float> pcm(500, 0.1f);
    pcm[321] = INFINITY;
    ASSERT_TRUE(stream.Push(pcm.data(), 300).ok());
    auto bad = stream.Push(pcm.data() + 300, 200);
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.status().message().find("sample 321"), std::string::npos);
  }
  {
    AudioFeatureStream stream(*encoder, {}, 0.0);
    std::vector<float> pcm(100, 0.1f);
    EXPECT_EQ(stream.Push(pcm.data(), pcm.size()).status().code(), StatusCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace lipsync
