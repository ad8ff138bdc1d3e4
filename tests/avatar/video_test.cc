// The MP4 writer, the video frame reader and the streaming audio reader.
#include "lipsync/video.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <iterator>

#include "avatar_test_util.h"
#include "lipsync/audio.h"
#include "wav_file.h"

namespace lipsync {
namespace {

using testing::ScratchDir;

#define EXPECT_MESSAGE(status, text)                          \
  EXPECT_NE((status).message().find(text), std::string::npos) \
      << "message: " << (status).message() << "\nexpected to contain: " << (text)

constexpr int kW = 96, kH = 64;
constexpr double kPi = 3.14159265358979323846;

// Frame i: a smooth picture whose brightness encodes i, so a decoded frame tells its index.
Image NumberedFrame(int i) {
  Image img{kW, kH, std::vector<uint8_t>(kW * kH * 3)};
  for (int y = 0; y < kH; ++y)
    for (int x = 0; x < kW; ++x)
      for (int c = 0; c < 3; ++c)
        img.bgr[(y * kW + x) * 3 + c] = static_cast<uint8_t>(20 + 6 * i + x / 8 + y / 8 + c * 10);
  return img;
}

double MeanAbsDiff(const Image& a, const Image& b) {
  double sum = 0;
  for (size_t i = 0; i < a.bgr.size(); ++i) sum += std::abs(int(a.bgr[i]) - int(b.bgr[i]));
  return sum / a.bgr.size();
}

std::vector<float> Sine(int rate, double seconds, double hz) {
  std::vector<float> pcm(static_cast<size_t>(rate * seconds));
  for (size_t i = 0; i < pcm.size(); ++i) pcm[i] = 0.5f * std::sin(2 * kPi * hz * i / rate);
  return pcm;
}

// Writes `frames` numbered frames with `audio_seconds` of a 440 Hz tone.
Status WriteVideo(const std::string& path, int frames, double audio_seconds, int crf = 0) {
  VideoWriterOptions o;
  o.width = kW;
  o.height = kH;
  o.crf = crf;
  o.audio = audio_seconds > 0;
  LIPSYNC_ASSIGN_OR_RETURN(auto writer, VideoWriter::Create(path, o));
  if (o.audio) {
    const auto pcm = Sine(o.audio_sample_rate, audio_seconds, 440);
    LIPSYNC_RETURN_IF_ERROR(writer->WriteAudio(pcm.data(), pcm.size()));
  }
  for (int i = 0; i < frames; ++i) LIPSYNC_RETURN_IF_ERROR(writer->WriteFrame(NumberedFrame(i)));
  return writer->Finish();
}

Result<std::vector<float>> ReadAllAudio(const std::string& path, int rate, size_t chunk) {
  LIPSYNC_ASSIGN_OR_RETURN(auto reader, AudioReader::Open(path, rate));
  std::vector<float> pcm;
  while (true) {
    LIPSYNC_ASSIGN_OR_RETURN(size_t n, reader->Read(chunk, pcm));
    if (n == 0) return pcm;
  }
}

TEST(VideoWriter, WritesFramesAndAudioOfTheSameLength) {
  ScratchDir dir;
  const std::string path = dir / "out.mp4";
  // 30 frames = 1.2 s; 2 s of audio given: the track is cut to the picture.
  ASSERT_TRUE(WriteVideo(path, 30, 2.0).ok());
  EXPECT_EQ(dir.List(), std::vector<std::string>{"out.mp4"});  // no temp file left

  auto video = VideoReader::Open(path);
  ASSERT_TRUE(video.ok()) << video.status().ToString();
  EXPECT_EQ((*video)->frame_count(), 30);
  EXPECT_EQ((*video)->width(), kW);
  EXPECT_EQ((*video)->height(), kH);
  EXPECT_NEAR((*video)->fps(), 25.0, 1e-6);
  for (int i = 0; i < 30; ++i) {
    auto frame = (*video)->ReadFrame(i);
    ASSERT_TRUE(frame.ok()) << frame.status().ToString();
    EXPECT_LT(MeanAbsDiff(*frame, NumberedFrame(i)), 2.0) << "frame " << i;
  }

  auto audio = ReadAllAudio(path, 16000, 4096);
  ASSERT_TRUE(audio.ok()) << audio.status().ToString();
  // 1.2 s at 16 kHz, within one video frame (640 samples).
  EXPECT_NEAR(static_cast<double>(audio->size()), 19200.0, 640.0);
  double energy = 0;
  for (float v : *audio) energy += v * v;
  EXPECT_GT(energy / audio->size(), 0.05);  // the tone survived (0.125 for a 0.5 sine)
}

TEST(VideoWriter, PadsShortAudioWithSilence) {
  ScratchDir dir;
  ASSERT_TRUE(WriteVideo(dir / "short.mp4", 25, 0.2).ok());
  auto audio = ReadAllAudio(dir / "short.mp4", 16000, 1 << 20);
  ASSERT_TRUE(audio.ok());
  EXPECT_NEAR(static_cast<double>(audio->size()), 16000.0, 640.0);
  double tail = 0;
  for (size_t i = 8000; i < audio->size(); ++i) tail = std::max(tail, std::fabs((*audio)[i] * 1.0));
  EXPECT_LT(tail, 0.02);
}

TEST(VideoReader, RandomAccessGivesTheSameFramesAsSequentialReading) {
  ScratchDir dir;
  // A lossy encode, so that frames depend on their references; key frames every 250 (default).
  ASSERT_TRUE(WriteVideo(dir / "v.mp4", 40, 0, 23).ok());
  auto forward = VideoReader::Open(dir / "v.mp4");
  ASSERT_TRUE(forward.ok());
  std::vector<Image> frames;
  for (int i = 0; i < 40; ++i) frames.push_back(*(*forward)->ReadFrame(i));
  auto random = VideoReader::Open(dir / "v.mp4");
  ASSERT_TRUE(random.ok());
  for (int i : {39, 0, 17, 16, 15, 38, 2, 2, 3, 20}) {
    auto frame = (*random)->ReadFrame(i);
    ASSERT_TRUE(frame.ok()) << frame.status().ToString();
    EXPECT_EQ(frame->bgr, frames[static_cast<size_t>(i)].bgr) << "frame " << i;
  }
  EXPECT_EQ((*random)->ReadFrame(40).status().code(), StatusCode::kInvalidArgument);
}

// Converting each frame in slices on several threads gives the same video, byte for byte.
TEST(VideoWriter, ConversionThreadsDoNotChangeTheVideo) {
  ScratchDir dir;
  auto write = [&](const std::string& name, int conversion_threads) {
    VideoWriterOptions o;
    o.width = kW;
    o.height = kH;
    o.audio = false;
    o.encoder_threads = 1;
    o.conversion_threads = conversion_threads;
    auto writer = VideoWriter::Create(dir / name, o);
    EXPECT_TRUE(writer.ok()) << writer.status().ToString();
    if (!writer.ok()) return std::string();
    for (int i = 0; i < 10; ++i) {
      Image frame = testing::PatternImage(kW, kH);
      for (size_t k = 0; k < frame.bgr.size(); k += 7) frame.bgr[k] ^= static_cast<uint8_t>(i * 37);
      EXPECT_TRUE((*writer)->WriteFrame(frame).ok());
    }
    EXPECT_TRUE((*writer)->Finish().ok());
    std::ifstream in(dir / name, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const std::string one = write("one.mp4", 1);
  const std::string three = write("three.mp4", 3);
  ASSERT_GT(one.size(), 1000u);
  EXPECT_TRUE(one == three) << one.size() << " bytes against " << three.size();
}

TEST(VideoWriter, FailuresLeaveNoFile) {
  ScratchDir dir;
  VideoWriterOptions o;
  o.width = kW;
  o.height = kH;
  {
    auto writer = VideoWriter::Create(dir / "abandoned.mp4", o);
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->WriteFrame(NumberedFrame(0)).ok());
    EXPECT_EQ(dir.List().size(), 1u);  // the hidden temp file
  }                                    // destroyed without Finish()
  EXPECT_TRUE(dir.List().empty());

  auto writer = VideoWriter::Create(dir / "empty.mp4", o);
  ASSERT_TRUE(writer.ok());
  EXPECT_MESSAGE((*writer)->Finish(), "no frames were written");
  writer->reset();
  EXPECT_TRUE(dir.List().empty());

  auto wrong = VideoWriter::Create(dir / "wrong.mp4", o);
  ASSERT_TRUE(wrong.ok());
  EXPECT_MESSAGE((*wrong)->WriteFrame(testing::PatternImage(kW + 2, kH)),
                 "frame 0 is 98x64, the video is 96x64");
  EXPECT_EQ((*wrong)->Finish().code(), StatusCode::kFailedPrecondition);
  wrong->reset();
  EXPECT_TRUE(dir.List().empty());

  o.conversion_threads = 0;
  EXPECT_MESSAGE(VideoWriter::Create(dir / "none.mp4", o).status(),
                 "conversion threads 0 must be 1 or more");
  o.conversion_threads = 1;
  o.width = 95;
  EXPECT_MESSAGE(VideoWriter::Create(dir / "odd.mp4", o).status(), "even width and height");
  o.width = kW;
  EXPECT_EQ(VideoWriter::Create(dir / "no/such/dir.mp4", o).status().code(), StatusCode::kNotFound);
  EXPECT_MESSAGE(VideoWriter::Create(dir / "x.nosuchformat", o).status(),
                 "no container for this extension");
  // WebM says it cannot hold H.264; GIF does not say, and refuses at the header.
  for (const char* name : {"x.webm", "x.gif"}) {
    auto unfit = VideoWriter::Create(dir / name, o);
    EXPECT_EQ(unfit.status().code(), StatusCode::kInvalidArgument) << name;
    EXPECT_MESSAGE(unfit.status(), "container cannot hold H.264 video with AAC audio");
  }
  EXPECT_TRUE(dir.List().empty());
}

TEST(AudioReader, ChunkSizeDoesNotChangeTheSamples) {
  ScratchDir dir;
  ASSERT_TRUE(WriteVideo(dir / "a.mp4", 20, 1.0).ok());
  auto whole = ReadAllAudio(dir / "a.mp4", 16000, 1 << 24);
  auto small = ReadAllAudio(dir / "a.mp4", 16000, 333);
  ASSERT_TRUE(whole.ok() && small.ok());
  EXPECT_EQ(*whole, *small);
  auto at48k = ReadAllAudio(dir / "a.mp4", 48000, 1000);
  ASSERT_TRUE(at48k.ok());
  // Resampling to 3x the rate gives 3x the samples, up to the rounding of ceil(n * 3).
  EXPECT_NEAR(static_cast<double>(at48k->size()), 3.0 * whole->size(), 3.0);
}

TEST(AudioReader, SameSamplesAsDecodeAudioFile) {
  // Render streams the speech with AudioReader in small pieces; DecodeAudioFile (the features
  // library) reads whole files through it in large ones. Both must give the same samples, at the
  // model's rate and at another.
  ScratchDir dir;
  ASSERT_TRUE(WriteVideo(dir / "a.mp4", 30, 1.2).ok());  // AAC at 48 kHz
  for (int rate : {16000, 44100}) {
    auto streamed = ReadAllAudio(dir / "a.mp4", rate, 777);
    auto whole = DecodeAudioFile(dir / "a.mp4", rate);
    ASSERT_TRUE(streamed.ok() && whole.ok());
    EXPECT_EQ(*streamed, *whole) << rate << " Hz";
  }
}

TEST(AudioReader, BadInputs) {
  ScratchDir dir;
  EXPECT_EQ(AudioReader::Open(dir / "none.wav", 16000).status().code(), StatusCode::kNotFound);
  testing::WriteFile(dir / "junk.wav", std::string(2000, 'x'));
  auto junk = AudioReader::Open(dir / "junk.wav", 16000);
  EXPECT_EQ(junk.status().code(), StatusCode::kDataLoss);
  EXPECT_MESSAGE(junk.status(), "junk.wav' cannot be read as audio");
  ASSERT_TRUE(WriteVideo(dir / "silent.mp4", 5, 0).ok());
  auto silent = AudioReader::Open(dir / "silent.mp4", 16000);
  EXPECT_EQ(silent.status().code(), StatusCode::kInvalidArgument);
  EXPECT_MESSAGE(silent.status(), "has no audio stream");
  // A WAV file cut to half its declared data reads up to the cut, then fails saying so (render
  // would otherwise make a video of half the speech).
  const std::vector<int16_t> pcm(32000, 1000);
  testing::WriteWav(dir / "cut.wav", pcm, 1, 16000);
  std::filesystem::resize_file(dir / "cut.wav", 44 + 32000);
  auto cut = AudioReader::Open(dir / "cut.wav", 16000);
  ASSERT_TRUE(cut.ok()) << cut.status().ToString();
  std::vector<float> samples;
  Status read = Status::Ok();
  while (read.ok()) {
    auto n = (*cut)->Read(4000, samples);
    if (!n.ok() || *n == 0) read = n.ok() ? Internal("the cut file read to its end") : n.status();
  }
  EXPECT_EQ(read.code(), StatusCode::kDataLoss) << read.ToString();
  EXPECT_MESSAGE(read, "cut.wav': the file is truncated or damaged");
  EXPECT_EQ(VideoReader::Open(dir / "none.mp4").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(VideoReader::Open(dir / "junk.wav").status().code(), StatusCode::kDataLoss);
}

}  // namespace
}  // namespace lipsync
