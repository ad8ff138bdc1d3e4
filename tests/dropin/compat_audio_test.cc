// The compatibility services' audio rules on the tiny test encoder: where a monolithic raw_audio
// chunk lies in time (the Go clients' chunks give the windows of the whole recording), the Go
// server's rows, audio_features, and the lipsyncsrv base64 PCM override.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "server/protocols/composite_audio.h"
#include "server/protocols/lipsyncsrv_audio.h"

namespace lipsync::server {
namespace {

constexpr int kFrame = 640;
constexpr int64_t kWindow = 32 * 16 * 16;

std::unique_ptr<AudioEncoder> Encoder() {
  EngineOptions options;
  options.intra_op_threads = 1;
  auto encoder = AudioEncoder::Create(
      std::string(LIPSYNC_TEST_DATA_DIR) + "/tiny_audio_encoder.onnx", options);
  EXPECT_TRUE(encoder.ok()) << encoder.status().ToString();
  return encoder.ok() ? std::move(*encoder) : nullptr;
}

std::vector<float> Speech(size_t samples, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> noise(0.0f, 0.02f);
  std::vector<float> pcm(samples);
  for (size_t i = 0; i < samples; ++i) {
    const double t = static_cast<double>(i) / 16000.0;
    pcm[i] = static_cast<float>(0.4 * std::max(0.0, std::sin(2 * M_PI * 3.1 * t)) *
                                std::sin(2 * M_PI * 170 * t)) +
             noise(rng);
  }
  return pcm;
}

// The Go clients' chunk helper (test_batch_sizes.go extractAudioChunk) on a 16 kHz recording.
std::vector<float> ClientChunk(const std::vector<float>& recording, int start, int batch) {
  const size_t first = static_cast<size_t>(std::max(0, start - 8)) * kFrame;
  const size_t n = std::min(static_cast<size_t>(batch + 15) * kFrame, recording.size() - first);
  return {recording.begin() + static_cast<std::ptrdiff_t>(first),
          recording.begin() + static_cast<std::ptrdiff_t>(first + n)};
}

monolithic::CompositeBatchRequest Request(const std::vector<float>& pcm, int batch, int start) {
  monolithic::CompositeBatchRequest r;
  r.set_raw_audio(pcm.data(), pcm.size() * sizeof(float));
  r.set_batch_size(batch);
  r.set_start_frame_idx(start);
  return r;
}

float MaxDiff(const float* a, const float* b, int64_t n) {
  float worst = 0;
  for (int64_t i = 0; i < n; ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
  return worst;
}

TEST(CompositeAudio, PlacementLengths) {
  for (int start : {0, 3, 8, 100}) EXPECT_EQ(CompositeAudioLead(start), std::min(start, 8));
  const std::vector<float> pcm(100000, 0.25f);
  // (lead + batch + 7) frames at least, silence after what was sent; (lead + batch + 11) at most.
  auto short_chunk = PlaceCompositeChunk(pcm.data(), 1000, 8, 4);
  ASSERT_EQ(short_chunk.size(), 19u * kFrame);
  EXPECT_EQ(short_chunk[999], 0.25f);
  EXPECT_EQ(short_chunk[1000], 0.0f);
  EXPECT_EQ(PlaceCompositeChunk(pcm.data(), 19 * kFrame + 5, 8, 4).size(), 19u * kFrame + 5);
  EXPECT_EQ(PlaceCompositeChunk(pcm.data(), pcm.size(), 8, 4).size(), 23u * kFrame);
}

// A chunk from the Go clients' helper gives each output frame the window that frame has in the
// whole recording whenever the chunk holds all the audio that window reads: at the recording's
// start (the helper starts at frame 0) and wherever enough follows.
TEST(CompositeAudio, ClientChunksGiveTheRecordingsWindows) {
  auto encoder = Encoder();
  ASSERT_TRUE(encoder);
  const auto recording = Speech(200 * kFrame, 1);
  auto mel = MelSpectrogram(recording.data(), recording.size());
  ASSERT_TRUE(mel.ok());
  auto whole = ComputeAudioWindows(*encoder, *mel);
  ASSERT_TRUE(whole.ok());
  for (int start : {0, 2, 4}) {
    const int batch = 6;
    auto windows = CompositeAudioInput(
        *encoder, Request(ClientChunk(recording, start, batch), batch, start), Behaviour::kLipsync);
    ASSERT_TRUE(windows.ok()) << windows.status().ToString();
    ASSERT_EQ(windows->shape(), (Shape{batch, 32, 16, 16}));
    EXPECT_LT(MaxDiff(windows->data_as<float>(), whole->data_as<float>() + start * kWindow,
                      batch * kWindow),
              1e-5f)
        << "start " << start;
  }
  // Mid-recording the chunk's frame lead + i is the recording's frame start + i: the first frames,
  // whose windows stay inside the chunk's audio, equal the recording's.
  auto mid = CompositeAudioInput(*encoder, Request(ClientChunk(recording, 50, 8), 8, 50),
                                 Behaviour::kLipsync);
  ASSERT_TRUE(mid.ok());
  auto exact = CompositeAudioWindows(*encoder, ClientChunk(recording, 50, 8).data(),
                                     static_cast<size_t>(23) * kFrame, 8, 8);
  ASSERT_TRUE(exact.ok());
  EXPECT_EQ(MaxDiff(mid->data_as<float>(), exact->data_as<float>(), 8 * kWindow), 0.0f);
  // Samples past (lead + batch + 11) frames change nothing; sample_rate 0 is 16000.
  auto longer = ClientChunk(recording, 50, 8);
  longer.insert(longer.end(), recording.begin(), recording.begin() + 20 * kFrame);
  auto with_tail = CompositeAudioInput(*encoder, Request(longer, 8, 50), Behaviour::kLipsync);
  auto cut = Request(
      std::vector<float>(longer.begin(), longer.begin() + static_cast<std::ptrdiff_t>(27 * kFrame)),
      8, 50);
  cut.set_sample_rate(16000);
  auto without = CompositeAudioInput(*encoder, cut, Behaviour::kLipsync);
  ASSERT_TRUE(with_tail.ok() && without.ok());
  EXPECT_EQ(MaxDiff(with_tail->data_as<float>(), without->data_as<float>(), 8 * kWindow), 0.0f);
}

// The Go server's output frame i reads the window of its chunk's frame i: lipsync's output
// frame i is its frame i + 8 (away from the chunk's last rows, where the Go server's two
// fewer encoder windows also differ).
TEST(CompositeAudio, GoServerRowsAreEightFramesEarly) {
  auto encoder = Encoder();
  ASSERT_TRUE(encoder);
  const auto chunk = ClientChunk(Speech(100 * kFrame, 2), 40, 8);
  auto ours = CompositeAudioInput(*encoder, Request(chunk, 8, 40), Behaviour::kLipsync);
  auto go = GoServerAudioWindows(*encoder, chunk.data(), chunk.size(), 16);
  auto go_mode = CompositeAudioInput(*encoder, Request(chunk, 8, 40), Behaviour::kOld);
  ASSERT_TRUE(ours.ok() && go.ok() && go_mode.ok());
  EXPECT_LT(MaxDiff(ours->data_as<float>(), go->data_as<float>() + 8 * kWindow, 4 * kWindow),
            1e-5f);
  EXPECT_GT(MaxDiff(ours->data_as<float>(), go_mode->data_as<float>(), kWindow), 0.01f);
  EXPECT_EQ(MaxDiff(go_mode->data_as<float>(), go->data_as<float>(), 8 * kWindow), 0.0f);
  // Its first frames read 8 - i zero rows before the chunk.
  for (int64_t v = 0; v < 8 * 512; ++v) ASSERT_EQ(go->data_as<float>()[v], 0.0f);
  // It reads no sample past (batch + 24) frames: the Go rule on the whole of a long chunk gives
  // the same windows.
  auto long_chunk = Speech(80 * kFrame, 3);
  auto mel = MelSpectrogram(long_chunk.data(), long_chunk.size());
  ASSERT_TRUE(mel.ok());
  const int64_t count = std::min<int64_t>((mel->shape()[1] - 16) * 25 / 80, 8 + 16);
  auto all = MelWindows(*mel);
  ASSERT_TRUE(all.ok());
  Tensor first = Tensor::Uninitialized(DataType::kFloat32, {count, 1, 80, 16});
  std::memcpy(first.data(), all->data(), first.byte_size());
  auto e = encoder->Encode(first);
  ASSERT_TRUE(e.ok());
  auto sequence = FeatureSequenceFromEmbeddings(*e);
  ASSERT_TRUE(sequence.ok());
  auto uncut = AudioWindowsFromSequence(*sequence, {0, 1, 2, 3, 4, 5, 6, 7});
  auto cut = GoServerAudioWindows(*encoder, long_chunk.data(), long_chunk.size(), 8);
  ASSERT_TRUE(uncut.ok() && cut.ok());
  EXPECT_LT(MaxDiff(uncut->data_as<float>(), cut->data_as<float>(), 8 * kWindow), 1e-5f);
  // Too short for one encoder window: zeros, as the Go server answers.
  auto tiny = GoServerAudioWindows(*encoder, long_chunk.data(), 1, 2);
  ASSERT_TRUE(tiny.ok());
  EXPECT_EQ(MaxDiff(tiny->data_as<float>(), std::vector<float>(2 * kWindow).data(), 2 * kWindow),
            0.0f);
}

TEST(CompositeAudio, AudioFeaturesAndErrors) {
  auto encoder = Encoder();
  ASSERT_TRUE(encoder);
  std::vector<float> window(kWindow);
  for (int64_t i = 0; i < kWindow; ++i) window[static_cast<size_t>(i)] = std::sin(0.01f * i);
  monolithic::CompositeBatchRequest r;
  r.set_batch_size(3);
  r.set_audio_features(window.data(), window.size() * sizeof(float));
  auto copied = CompositeAudioInput(*encoder, r, Behaviour::kLipsync);
  ASSERT_TRUE(copied.ok());
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(MaxDiff(copied->data_as<float>() + i * kWindow, window.data(), kWindow), 0.0f);
  }
  struct Case {
    std::function<void(monolithic::CompositeBatchRequest&)> change;
    const char* message;
  };
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<Case> cases = {
      {[](auto& q) { q.mutable_audio_features()->pop_back(); },
       "audio_features holds 32767 bytes; expected 32768"},
      {[](auto& q) { q.clear_audio_features(); }, "the request has no audio"},
      {[](auto& q) { q.set_raw_audio(std::string(4001, '\0')); },
       "raw_audio holds 4001 bytes, not a whole number of float32 samples"},
      {[nan](auto& q) { q.set_raw_audio(std::string(reinterpret_cast<const char*>(&nan), 4)); },
       "raw_audio"},
      {[nan](auto& q) { std::memcpy(q.mutable_audio_features()->data() + 8, &nan, 4); },
       "audio_features"}};
  for (const auto& c : cases) {
    auto q = r;
    c.change(q);
    auto result = CompositeAudioInput(*encoder, q, Behaviour::kLipsync);
    ASSERT_FALSE(result.ok()) << c.message;
    EXPECT_NE(result.status().message().find(c.message), std::string::npos)
        << result.status().message();
  }
}

std::string Base64Of(const std::vector<int16_t>& samples) {
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const auto* b = reinterpret_cast<const unsigned char*>(samples.data());
  const size_t n = samples.size() * 2;
  std::string out;
  for (size_t i = 0; i < n; i += 3) {
    const uint32_t v =
        (b[i] << 16) | ((i + 1 < n ? b[i + 1] : 0) << 8) | (i + 2 < n ? b[i + 2] : 0);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < n ? kAlphabet[(v >> 6) & 63] : '=';
    out += i + 2 < n ? kAlphabet[v & 63] : '=';
  }
  return out;
}

TEST(PcmOverride, DecodesAsThePythonServer) {
  std::vector<int16_t> samples(960);
  for (size_t i = 0; i < samples.size(); ++i) samples[i] = static_cast<int16_t>(i * 37 - 16000);
  std::string text = Base64Of(samples);
  ASSERT_TRUE(IsPcmOverride(text));
  EXPECT_FALSE(IsPcmOverride(std::string(100, 'A')));  // a file name
  text.insert(64, "\n");                               // line breaks are skipped
  auto pcm = DecodePcmOverride(text);
  ASSERT_TRUE(pcm.ok()) << pcm.status().ToString();
  ASSERT_EQ(pcm->size(), kPcmOverrideSamples);  // padded with silence to 640 ms at 24 kHz
  for (size_t i = 0; i < samples.size(); ++i) ASSERT_EQ((*pcm)[i], samples[i] / 32767.0f) << i;
  EXPECT_EQ((*pcm)[960], 0.0f);
  std::vector<int16_t> long_clip(20000, 1000);
  auto cut = DecodePcmOverride(Base64Of(long_clip));
  ASSERT_TRUE(cut.ok());
  EXPECT_EQ(cut->size(), kPcmOverrideSamples);
}

TEST(PcmOverride, BadTextIsRefusedWithoutEchoingIt) {
  const std::string good = Base64Of(std::vector<int16_t>(15360, 300));
  const std::vector<std::pair<std::string, std::string>> cases = {
      {good.substr(0, 500) + "#" + good.substr(501), "outside the base64 alphabet at position 500"},
      {good.substr(1), "not whole groups of 4"},
      {good.substr(0, good.size() - 4) + "QQ=A", "data after the '=' padding"},
      {std::string(200, 'A') + "A===", "not whole groups of 4 with at most 2"},
      {Base64Of(std::vector<int16_t>(500)).substr(0, 664) + "AA==", "not a whole number"},
      {std::string(120, ' '), "holds no samples"}};
  for (const auto& [text, message] : cases) {
    auto pcm = DecodePcmOverride(text);
    ASSERT_FALSE(pcm.ok()) << message;
    EXPECT_EQ(pcm.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(pcm.status().message().find(message), std::string::npos) << pcm.status().message();
    EXPECT_LT(pcm.status().message().size(), 300u);
    EXPECT_EQ(pcm.status().message().find(text.substr(0, 40)), std::string::npos);
  }
}

TEST(PcmOverride, WindowsLipsyncAndPython) {
  auto encoder = Encoder();
  ASSERT_TRUE(encoder);
  std::vector<float> clip(kPcmOverrideSamples);
  for (size_t i = 0; i < clip.size(); ++i) clip[i] = 0.3f * std::sin(0.07f * i) * (i % 7000 < 3000);
  // lipsync: the clip at 16 kHz is one output frame with 8 frames before it.
  auto ours = PcmOverrideWindow(*encoder, clip);
  auto pcm16 = ResampleAudio(clip, 24000, 16000);
  ASSERT_TRUE(ours.ok() && pcm16.ok());
  ASSERT_EQ(pcm16->size(), 16u * kFrame);
  auto chunk = CompositeAudioWindows(*encoder, pcm16->data(), pcm16->size(), 1, 8);
  ASSERT_TRUE(chunk.ok());
  EXPECT_EQ(MaxDiff(ours->data_as<float>(), chunk->data_as<float>(), kWindow), 0.0f);
  // Python: mel bands 0..31 of the middle 16 mel frames of the 24 kHz samples taken as 16 kHz.
  auto python = PythonPcmOverrideWindow(clip);
  auto mel = MelSpectrogram(clip.data(), clip.size());
  ASSERT_TRUE(python.ok() && mel.ok());
  const int64_t frames = mel->shape()[1];
  ASSERT_EQ(frames, 77);
  for (int c = 0; c < 32; ++c)
    for (int t = 0; t < 16; ++t)
      for (int k = 0; k < 16; ++k)
        ASSERT_EQ(python->data_as<float>()[(c * 16 + t) * 16 + k],
                  mel->data_as<float>()[c * frames + 30 + t]);
  // Python, package features: the frame's row alone, each value 16 times.
  Tensor sequence(DataType::kFloat32, {5, 512});
  for (int64_t i = 0; i < 5 * 512; ++i) sequence.data_as<float>()[i] = static_cast<float>(i);
  auto rows = PythonSequenceWindows(sequence, {3, 0});
  ASSERT_TRUE(rows.ok());
  for (int64_t v = 0; v < 512; ++v)
    for (int k = 0; k < 16; ++k) ASSERT_EQ(rows->data_as<float>()[v * 16 + k], 3 * 512 + v);
  auto past = PythonSequenceWindows(sequence, {5});
  ASSERT_FALSE(past.ok());
  EXPECT_NE(past.status().message().find("frame 5 has no row"), std::string::npos);
}

}  // namespace
}  // namespace lipsync::server
