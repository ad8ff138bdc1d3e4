// Video files through FFmpeg: an H.264 + AAC MP4 writer that never leaves a partial file, a frame
// reader with random access, and a streaming audio reader.
//
//   lipsync::VideoWriterOptions options;
//   options.width = 1920; options.height = 1080; options.fps = 25;
//   auto writer = lipsync::VideoWriter::Create("out.mp4", options);   // writes a hidden temp file
//   (*writer)->WriteAudio(pcm.data(), pcm.size());   // mono float at options.audio_sample_rate
//   (*writer)->WriteFrame(frame);                    // BGR, width x height
//   (*writer)->Finish();   // audio cut or padded to the video's length, then renamed to out.mp4
//   // Destroying a writer that did not finish removes its temp file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lipsync/face.h"
#include "lipsync/status.h"

namespace lipsync {

struct VideoWriterOptions {
  int width = 0;  // even: H.264 in yuv420p halves the chroma planes
  int height = 0;
  double fps = 25.0;
  // libx264 settings: quality (constant rate factor, 0 = lossless, 18 visually lossless) and speed.
  int crf = 18;
  std::string preset = "veryfast";
  int encoder_threads = 0;  // 0: libx264 chooses
  // Threads that convert each frame from BGR to YUV 4:2:0 (in slices at once). More than one
  // takes that work off the caller's thread when cores are to spare.
  int conversion_threads = 1;
  // Audio track (AAC, FFmpeg's own encoder), mono. Off: a video without sound.
  bool audio = true;
  int audio_sample_rate = 48000;
  int audio_bitrate = 128000;
};

class VideoWriter {
 public:
  // The container follows the extension (.mp4, .mov, .mkv). Fails before writing anything when
  // the folder is not writable, the size is odd or the encoders are missing.
  static Result<std::unique_ptr<VideoWriter>> Create(const std::string& path,
                                                     const VideoWriterOptions& options);
  ~VideoWriter();
  VideoWriter(const VideoWriter&) = delete;
  VideoWriter& operator=(const VideoWriter&) = delete;

  // Appends one BGR frame of the configured size.
  Status WriteFrame(const Image& frame);
  // Appends mono PCM at audio_sample_rate. Audio is buffered and encoded as the video advances,
  // so calls may run ahead of the frames.
  Status WriteAudio(const float* pcm, size_t count);
  // Samples the audio track needs to cover `frames` frames: round(frames * rate / fps).
  int64_t AudioSamplesFor(int64_t frames) const;
  int64_t frames_written() const;
  int64_t audio_samples_written() const;  // given to WriteAudio so far

  // Encodes the audio up to exactly the video's duration (cut, or padded with silence), flushes
  // both encoders, writes the index and renames the temp file to the final path.
  Status Finish();
  const std::string& path() const;

 private:
  struct State;
  explicit VideoWriter(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

// Decoded frames of a video file. Reading forward is sequential decoding; any other index seeks
// to the key frame before it and decodes up to it.
class VideoReader {
 public:
  // Scans the file once to count its frames (packets, not decoded). NotFound, DataLoss (not a
  // video or corrupt), InvalidArgument (no video stream).
  static Result<std::unique_ptr<VideoReader>> Open(const std::string& path);
  ~VideoReader();
  VideoReader(const VideoReader&) = delete;
  VideoReader& operator=(const VideoReader&) = delete;

  int width() const;
  int height() const;
  double fps() const;
  int64_t frame_count() const;
  // Frame `index` in presentation order, BGR.
  Result<Image> ReadFrame(int64_t index);

 private:
  struct State;
  explicit VideoReader(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

// The audio of any file FFmpeg reads, decoded, down-mixed to mono and resampled to `sample_rate`
// in chunks, so that memory does not grow with the length of the audio.
class AudioReader {
 public:
  // NotFound for a missing file, DataLoss for one that is not media, InvalidArgument for one
  // without an audio stream.
  static Result<std::unique_ptr<AudioReader>> Open(const std::string& path, int sample_rate);
  ~AudioReader();
  AudioReader(const AudioReader&) = delete;
  AudioReader& operator=(const AudioReader&) = delete;

  // Appends up to `max_samples` samples to `out`; returns how many. 0 means the end of the
  // audio. DataLoss when the stream turns out to be corrupt part way.
  Result<size_t> Read(size_t max_samples, std::vector<float>& out);
  // The container's duration in seconds (an estimate, 0 when unknown).
  double duration_seconds() const;
  int sample_rate() const;

 private:
  struct State;
  explicit AudioReader(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace lipsync
