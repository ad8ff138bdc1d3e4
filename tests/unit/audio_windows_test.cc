// Audio features without an encoder: window counts, encoder windows, the UNet's frame windows and
// their edge rows, mel spectrogram basics, decoding and resampling. Each is checked against a
// direct re-statement of the spec written here.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "lipsync/audio.h"
#include "wav_file.h"

namespace lipsync {
namespace {

using lipsync::testing::WriteWav;

// A [80, T] mel whose element (b, t) is b * 10000 + t, so a copied window shows where it came from.
Tensor IndexMel(int64_t frames) {
  Tensor mel(DataType::kFloat32, {kMelBands, frames});
  for (int64_t b = 0; b < kMelBands; ++b) {
    for (int64_t t = 0; t < frames; ++t) {
      mel.data_as<float>()[b * frames + t] = static_cast<float>(b * 10000 + t);
    }
  }
  return mel;
}

// The windows' first frames as the "append until one runs past the end, then the last 16 frames
// and stop" loop produces them, start = floor(16 k / 5) in integers (80 k / 25).
std::vector<int64_t> LoopStarts(int64_t frames) {
  std::vector<int64_t> starts;
  for (int64_t k = 0;; ++k) {
    const int64_t start = 16 * k / 5;
    if (start + 16 > frames) {
      starts.push_back(frames - 16);
      return starts;
    }
    starts.push_back(start);
  }
}

// The spec's int((T - 16) / 80 * 25) + 2 is evaluated in floating point (as upstream's Python
// does). In exact arithmetic it is floor(5 (T - 16) / 16) + 2; the two differ, by one, only where
// 5 (T - 16) / 16 is a whole number and (T - 16) / 80 rounds down (T = 384: 4.6 * 25 gives
// 114.99999999999999, and Python's int((384 - 16) / 80. * 25) + 2 is 116).
TEST(AudioWindowCount, MatchesTheSpecFormulaAt25Fps) {
  int rounded_down = 0;
  for (int64_t frames = 0; frames < 20000; ++frames) {
    const int64_t exact = frames < 16 ? 0 : 5 * (frames - 16) / 16 + 2;
    const int64_t count = MelWindowCount(frames);
    if (count != exact) {
      ASSERT_EQ(count, exact - 1) << "T = " << frames;
      ASSERT_EQ(5 * (frames - 16) % 16, 0) << "T = " << frames;
      ++rounded_down;
    }
    ASSERT_EQ(VideoFrameCount(frames), count == 0 ? 0 : count + 2) << "T = " << frames;
  }
  EXPECT_EQ(MelWindowCount(384), 116);
  EXPECT_EQ(MelWindowCount(383), 116);
  EXPECT_EQ(MelWindowCount(385), 117);
  EXPECT_GT(rounded_down, 10);
}

TEST(AudioWindowCount, OtherFrameRatesAndBadOnes) {
  EXPECT_EQ(MelWindowCount(16 + 80, 20.0), 22);  // one second more: 20 more windows
  EXPECT_EQ(MelWindowCount(16 + 80, 30.0), 32);
  EXPECT_EQ(MelWindowCount(1000, 0.0), 0);
  EXPECT_EQ(MelWindowCount(1000, -25.0), 0);
  EXPECT_EQ(MelWindowCount(1000, std::nan("")), 0);
  EXPECT_FALSE(MelWindows(IndexMel(100), 0.0).ok());
}

// The spec's count against the loop form: the same windows, except that the loop sometimes adds
// one more, a repeat of the last 16 frames (when some window already starts at T - 16).
TEST(AudioWindowCount, LoopFormDiffersOnlyByARepeatedLastWindow) {
  int differing = 0;
  for (int64_t frames = 16; frames < 2000; ++frames) {
    const auto loop = LoopStarts(frames);
    const int64_t count = MelWindowCount(frames);
    const int64_t extra = static_cast<int64_t>(loop.size()) - count;
    ASSERT_TRUE(extra == 0 || extra == 1) << "T = " << frames;
    if (extra == 1) {
      ASSERT_EQ(loop[loop.size() - 1], loop[loop.size() - 2]) << "T = " << frames;
      ++differing;
    }
    auto windows = MelWindows(IndexMel(frames));
    ASSERT_TRUE(windows.ok());
    for (int64_t k = 0; k < count; ++k) {
      ASSERT_EQ(windows->data_as<float>()[k * 80 * 16], static_cast<float>(loop[k]))
          << "T = " << frames << ", window " << k;
    }
  }
  EXPECT_GT(differing, 400);  // about a quarter of the lengths
}

TEST(AudioMelWindows, CopiesEachWindowTransposedToBandsByFrames) {
  for (int64_t frames : {16, 17, 19, 100, 333}) {
    Tensor mel = IndexMel(frames);
    auto windows = MelWindows(mel);
    ASSERT_TRUE(windows.ok()) << windows.status().ToString();
    const int64_t count = MelWindowCount(frames);
    ASSERT_EQ(windows->shape(), (Shape{count, 1, 80, 16}));
    for (int64_t k = 0; k < count; ++k) {
      int64_t start = 80 * k / 25;
      if (start + 16 > frames) start = frames - 16;
      for (int64_t b = 0; b < 80; ++b) {
        for (int64_t c = 0; c < 16; ++c) {
          ASSERT_EQ(windows->data_as<float>()[(k * 80 + b) * 16 + c],
                    static_cast<float>(b * 10000 + start + c))
              << "T " << frames << " window " << k << " band " << b << " column " << c;
        }
      }
    }
  }
}

TEST(AudioMelWindows, RejectsShortAndMisshapenMels) {
  auto short_mel = MelWindows(IndexMel(15));
  ASSERT_FALSE(short_mel.ok());
  EXPECT_EQ(short_mel.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(short_mel.status().message().find("too short"), std::string::npos);
  EXPECT_FALSE(MelWindows(Tensor(DataType::kFloat32, {40, 100})).ok());
  EXPECT_FALSE(MelWindows(Tensor(DataType::kFloat16, {80, 100})).ok());
  EXPECT_FALSE(MelWindows(Tensor(DataType::kFloat32, {1, 80, 100})).ok());
}

// Embedding row k holds k * 1000 + c + 1 at column c (never 0, so zero rows stand out).
Tensor IndexEmbeddings(int64_t count) {
  Tensor e(DataType::kFloat32, {count, 512});
  for (int64_t k = 0; k < count; ++k) {
    for (int64_t c = 0; c < 512; ++c) e.data_as<float>()[k * 512 + c] = k * 1000.0f + c + 1;
  }
  return e;
}

TEST(AudioFrameWindows, SequenceWithEdgeRowsZeroOrRepeated) {
  for (WindowEdge edge : {WindowEdge::kZeros, WindowEdge::kRepeat}) {
    for (int64_t count : {1, 2, 5, 8, 9, 20, 40}) {
      const Tensor e = IndexEmbeddings(count);
      auto windows = AudioWindowsFromEmbeddings(e, edge);
      ASSERT_TRUE(windows.ok()) << windows.status().ToString();
      ASSERT_EQ(windows->shape(), (Shape{count + 2, 32, 16, 16}));
      // s = [e0] + e + [e_last], written out.
      std::vector<int64_t> s = {0};
      for (int64_t k = 0; k < count; ++k) s.push_back(k);
      s.push_back(count - 1);
      const int64_t n = static_cast<int64_t>(s.size());
      for (int64_t i = 0; i < count + 2; ++i) {
        for (int64_t r = 0; r < 16; ++r) {
          int64_t j = i - 8 + r;
          bool zero = false;
          if (j < 0 || j >= n) {
            zero = edge == WindowEdge::kZeros;
            j = std::clamp<int64_t>(j, 0, n - 1);
          }
          const float* row = windows->data_as<float>() + (i * 16 + r) * 512;
          for (int64_t c = 0; c < 512; c += 37) {
            const float want = zero ? 0.0f : s[j] * 1000.0f + c + 1;
            ASSERT_EQ(row[c], want) << "frame " << i << " row " << r << " W " << count;
          }
        }
      }
    }
  }
}

TEST(AudioFrameWindows, RowJIsChannels2jAnd2jPlus1) {
  auto windows = AudioWindowsFromEmbeddings(IndexEmbeddings(30));
  ASSERT_TRUE(windows.ok());
  // Frame 10, row 3 is s[5] = e[4]; its first half is channel 6, its second half channel 7.
  const float* frame = windows->data_as<float>() + 10 * 32 * 16 * 16;
  EXPECT_EQ(frame[6 * 256 + 0], 4 * 1000.0f + 1);
  EXPECT_EQ(frame[7 * 256 + 255], 4 * 1000.0f + 512);
}

TEST(AudioFrameWindows, RejectsBadEmbeddings) {
  EXPECT_FALSE(AudioWindowsFromEmbeddings(Tensor(DataType::kFloat32, {0, 512})).ok());
  EXPECT_FALSE(AudioWindowsFromEmbeddings(Tensor(DataType::kFloat32, {4, 256})).ok());
  EXPECT_FALSE(AudioWindowsFromEmbeddings(Tensor(DataType::kInt32, {4, 512})).ok());
}

// A precomputed per-frame sequence is windowed as it is: no rows added at its ends.
TEST(AudioFrameWindows, FromSequenceReadsRowsAroundEachFrame) {
  for (WindowEdge edge : {WindowEdge::kZeros, WindowEdge::kRepeat}) {
    const int64_t n = 12;
    const Tensor rows = IndexEmbeddings(n);
    const std::vector<int64_t> frames = {0, 7, 3, 11, 20};
    auto windows = AudioWindowsFromSequence(rows, frames, edge);
    ASSERT_TRUE(windows.ok()) << windows.status().ToString();
    ASSERT_EQ(windows->shape(), (Shape{5, 32, 16, 16}));
    for (size_t k = 0; k < frames.size(); ++k) {
      for (int64_t r = 0; r < 16; ++r) {
        int64_t j = frames[k] - 8 + r;
        const bool outside = j < 0 || j >= n;
        j = std::clamp<int64_t>(j, 0, n - 1);
        const float* row = windows->data_as<float>() + (static_cast<int64_t>(k) * 16 + r) * 512;
        for (int64_t c = 0; c < 512; c += 31) {
          const float want = outside && edge == WindowEdge::kZeros ? 0.0f : j * 1000.0f + c + 1;
          ASSERT_EQ(row[c], want) << "frame " << frames[k] << " row " << r;
        }
      }
    }
  }
  EXPECT_FALSE(AudioWindowsFromSequence(Tensor(DataType::kFloat32, {0, 512}), {0}).ok());
  EXPECT_FALSE(AudioWindowsFromSequence(Tensor(DataType::kFloat32, {4, 500}), {0}).ok());
}

TEST(AudioMel, ShapeSilenceAndErrors) {
  for (size_t n : {size_t{1}, size_t{199}, size_t{200}, size_t{401}, size_t{16000}}) {
    std::vector<float> silence(n, 0.0f);
    auto mel = MelSpectrogram(silence.data(), n);
    ASSERT_TRUE(mel.ok()) << mel.status().ToString();
    ASSERT_EQ(mel->shape(), (Shape{80, static_cast<int64_t>(1 + n / 200)}));
    for (int64_t i = 0; i < mel->element_count(); ++i) ASSERT_EQ(mel->data_as<float>()[i], -4.0f);
  }
  EXPECT_EQ(MelSpectrogram(nullptr, 0).status().code(), StatusCode::kInvalidArgument);
  std::vector<float> short_pcm(400, 0.1f);
  MelOptions reflect;
  reflect.padding = StftPadding::kReflect;
  EXPECT_EQ(MelSpectrogram(short_pcm.data(), short_pcm.size(), reflect).status().code(),
            StatusCode::kInvalidArgument);
  short_pcm.push_back(0.1f);
  EXPECT_TRUE(MelSpectrogram(short_pcm.data(), short_pcm.size(), reflect).ok());
  short_pcm[7] = std::nanf("");
  auto nan = MelSpectrogram(short_pcm.data(), short_pcm.size());
  ASSERT_FALSE(nan.ok());
  EXPECT_NE(nan.status().message().find("sample 7"), std::string::npos);
}

// A 1 kHz tone peaks in the band whose centre is nearest 1 kHz, in every frame away from the ends.
TEST(AudioMel, ToneLandsInItsBand) {
  std::vector<float> tone(16000);
  for (size_t i = 0; i < tone.size(); ++i) tone[i] = 0.5f * std::sin(2 * M_PI * 1000.0 * i / 16000);
  auto mel = MelSpectrogram(tone.data(), tone.size());
  ASSERT_TRUE(mel.ok());
  const int64_t frames = mel->shape()[1];
  // Slaney mel of 55 Hz and 7600 Hz, 82 points; 1 kHz is mel 15.
  const double lo = 55.0 / (200.0 / 3), hi = 15 + std::log(7.6) / (std::log(6.4) / 27);
  int want = 0;
  for (int b = 0; b < 80; ++b) {
    const double centre = lo + (hi - lo) * (b + 1) / 81;
    const double best = lo + (hi - lo) * (want + 1) / 81;
    if (std::fabs(centre - 15) < std::fabs(best - 15)) want = b;
  }
  for (int64_t t = 3; t < frames - 3; ++t) {
    int peak = 0;
    for (int b = 1; b < 80; ++b) {
      if (mel->data_as<float>()[b * frames + t] > mel->data_as<float>()[peak * frames + t])
        peak = b;
    }
    ASSERT_EQ(peak, want) << "frame " << t;
  }
}

class AudioDecode : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        std::filesystem::temp_directory_path() /
        ("lipsync_audio_test_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
         "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }
  std::filesystem::path dir_;
};

TEST_F(AudioDecode, StereoIsAveragedAt16kHz) {
  std::vector<int16_t> pcm;
  for (int i = 0; i < 1600; ++i) {
    pcm.push_back(static_cast<int16_t>(i * 10));  // left
    pcm.push_back(static_cast<int16_t>(-i * 4));  // right
  }
  WriteWav(Path("stereo.wav"), pcm, 2, 16000);
  auto decoded = DecodeAudioFile(Path("stereo.wav"));
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  ASSERT_EQ(decoded->size(), 1600u);
  for (int i = 0; i < 1600; ++i) {
    ASSERT_NEAR((*decoded)[i], (i * 10 - i * 4) / 2.0 / 32768.0, 1e-6) << "sample " << i;
  }
}

TEST_F(AudioDecode, ResamplesToTheRequestedRate) {
  std::vector<int16_t> pcm(44100);
  for (size_t i = 0; i < pcm.size(); ++i) {
    pcm[i] = static_cast<int16_t>(10000 * std::sin(2 * M_PI * 440.0 * i / 44100));
  }
  WriteWav(Path("tone.wav"), pcm, 1, 44100);
  auto decoded = DecodeAudioFile(Path("tone.wav"));
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(decoded->size(), 16000u);
  // 440 Hz for one second: 880 sign changes, give or take the ends.
  int crossings = 0;
  for (size_t i = 1; i < decoded->size(); ++i) {
    crossings += ((*decoded)[i - 1] < 0) != ((*decoded)[i] < 0);
  }
  EXPECT_NEAR(crossings, 880, 2);
}

TEST_F(AudioDecode, ClearErrors) {
  auto missing = DecodeAudioFile(Path("missing.wav"));
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("missing.wav"), std::string::npos);

  std::ofstream(Path("notes.txt")) << "these are not audio samples\n";
  auto text = DecodeAudioFile(Path("notes.txt"));
  ASSERT_FALSE(text.ok());
  EXPECT_EQ(text.status().code(), StatusCode::kDataLoss) << text.status().ToString();

  WriteWav(Path("empty.wav"), std::vector<int16_t>{}, 1, 16000);
  auto empty = DecodeAudioFile(Path("empty.wav"));
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.status().code(), StatusCode::kInvalidArgument) << empty.status().ToString();

  // Half the declared data.
  WriteWav(Path("full.wav"), std::vector<int16_t>(32000, 1000), 1, 16000);
  std::filesystem::copy_file(Path("full.wav"), Path("cut.wav"));
  std::filesystem::resize_file(Path("cut.wav"), 44 + 32000);
  auto cut = DecodeAudioFile(Path("cut.wav"));
  ASSERT_FALSE(cut.ok());
  EXPECT_EQ(cut.status().code(), StatusCode::kDataLoss) << cut.status().ToString();
  EXPECT_NE(cut.status().message().find("truncated"), std::string::npos);

  EXPECT_FALSE(DecodeAudioFile(Path("full.wav"), 0).ok());
  EXPECT_EQ(DecodeAudioFile(dir_.string()).status().code(), StatusCode::kInvalidArgument);
}

TEST(AudioResample, LengthAndFrequency) {
  for (int rate : {8000, 22050, 44100, 48000}) {
    const size_t n = static_cast<size_t>(rate) * 3 / 2 + 7;
    std::vector<float> tone(n);
    for (size_t i = 0; i < n; ++i) tone[i] = 0.5f * std::sin(2 * M_PI * 300.0 * i / rate);
    auto out = ResampleAudio(tone, rate, 16000);
    ASSERT_TRUE(out.ok()) << out.status().ToString();
    const double exact = static_cast<double>(n) * 16000 / rate;
    EXPECT_LE(std::fabs(static_cast<double>(out->size()) - exact), 1.0) << rate;
    // Away from the ends it is the same tone: compare with the 16 kHz sine at the same times.
    double worst = 0;
    for (size_t i = 800; i + 800 < out->size(); ++i) {
      worst = std::max(worst, std::fabs((*out)[i] - 0.5 * std::sin(2 * M_PI * 300.0 * i / 16000)));
    }
    EXPECT_LT(worst, 0.01) << rate;
  }
  EXPECT_FALSE(ResampleAudio({1.0f}, 0, 16000).ok());
  auto same = ResampleAudio({1.0f, 2.0f}, 16000, 16000);
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(*same, (std::vector<float>{1.0f, 2.0f}));
}

}  // namespace
}  // namespace lipsync
