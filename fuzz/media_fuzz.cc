// Video and audio files as FFmpeg reads them: the videos of a client's model package (video.mp4
// and the crop videos) and audio files. The first byte picks a video or an audio reading, the rest
// is the file. Opening and reading must refuse with a short message that is not internal, or give
// frames of the size the video says, in the count it says, and finite samples in [-1, 1] or near.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "fuzz_check.h"
#include "fuzz_input.h"
#include "lipsync/video.h"

namespace lipsync::fuzz {
namespace {

void Say(const std::string& what) {
  static const bool verbose = std::getenv("LIPSYNC_FUZZ_VERBOSE") != nullptr;
  if (verbose) std::fprintf(stderr, "  %s\n", what.c_str());
}

void ReadVideo(const std::string& path) {
  auto video = VideoReader::Open(path);
  CheckRefusal(video.status(), "VideoReader::Open");
  if (!video.ok()) return Say(video.status().message());
  const int64_t count = (*video)->frame_count();
  Say("video " + std::to_string((*video)->width()) + "x" + std::to_string((*video)->height()) +
      ", " + std::to_string(count) + " frames");
  if (count < 1) Broken("VideoReader::Open", "a video of " + std::to_string(count) + " frames");
  // The first, the last (a seek back after it), and the middle.
  for (int64_t index : {int64_t{0}, count - 1, count / 2}) {
    auto frame = (*video)->ReadFrame(index);
    CheckRefusal(frame.status(), "VideoReader::ReadFrame");
    if (!frame.ok()) {
      Say("frame " + std::to_string(index) + ": " + frame.status().message());
      continue;
    }
    if (frame->width != (*video)->width() || frame->height != (*video)->height() ||
        frame->bgr.size() != static_cast<size_t>(frame->width) * frame->height * 3) {
      Broken("VideoReader::ReadFrame", "a frame not of the video's size");
    }
  }
}

void ReadAudio(const std::string& path) {
  auto audio = AudioReader::Open(path, 16000);
  CheckRefusal(audio.status(), "AudioReader::Open");
  if (!audio.ok()) return Say(audio.status().message());
  std::vector<float> pcm;
  for (int chunk = 0; chunk < 64; ++chunk) {  // up to 64 s
    auto n = (*audio)->Read(16000, pcm);
    CheckRefusal(n.status(), "AudioReader::Read");
    if (!n.ok()) Say(n.status().message());
    if (!n.ok() || *n == 0) break;
  }
  Say("audio: " + std::to_string(pcm.size()) + " samples at 16 kHz");
  for (float v : pcm) {
    // Decoders of integer formats stay within [-1, 1]; float formats may carry anything finite.
    if (!std::isfinite(v)) Broken("AudioReader::Read", "a sample that is not finite");
  }
}

}  // namespace
}  // namespace lipsync::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static const std::string path = lipsync::fuzz::ScratchPath("media");
  lipsync::fuzz::WriteBytes(path, data + 1, size - 1);
  if (data[0] % 2 == 0) {
    lipsync::fuzz::ReadVideo(path);
  } else {
    lipsync::fuzz::ReadAudio(path);
  }
  return 0;
}
