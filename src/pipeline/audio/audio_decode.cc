// Audio files to mono float PCM with FFmpeg: the whole file through AudioReader (which demuxes,
// decodes, downmixes by the mean of the channels as librosa's to_mono does, and resamples), and the
// resampler both use (the SoX resampler when this FFmpeg has it, else FFmpeg's own).
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lipsync/audio.h"
#include "lipsync/video.h"
#include "pipeline/media/ffmpeg_util.h"

extern "C" {
#include <libavutil/channel_layout.h>
#include <libavutil/opt.h>
}

namespace lipsync {
namespace ffmpeg {

Result<SwrPtr> MakeMonoResampler(const AVChannelLayout& in_layout, AVSampleFormat in_format,
                                 int in_rate, int to_rate) {
  // FFmpeg refuses what it cannot convert (a decoder's odd layout or format) as invalid input.
  const auto refused = [&](const char* what, int rc) {
    if (rc == AVERROR(ENOMEM)) return ResourceExhausted(std::string(what) + ": out of memory");
    const char* format = av_get_sample_fmt_name(in_format);
    return InvalidArgument(std::string(what) + " for " + std::to_string(in_layout.nb_channels) +
                           " channels of " + (format ? format : "an unknown format") + " at " +
                           std::to_string(in_rate) + " Hz: " + ErrorText(rc));
  };
  AVChannelLayout layout = {};
  int rc = 0;
  if (in_layout.order == AV_CHANNEL_ORDER_UNSPEC || in_layout.nb_channels <= 0) {
    av_channel_layout_default(&layout, in_layout.nb_channels > 0 ? in_layout.nb_channels : 1);
  } else if ((rc = av_channel_layout_copy(&layout, &in_layout)) < 0) {
    return refused("cannot copy the audio channel layout", rc);
  }
  AVChannelLayout mono = AV_CHANNEL_LAYOUT_MONO;
  SwrContext* raw = nullptr;
  rc = swr_alloc_set_opts2(&raw, &mono, AV_SAMPLE_FMT_FLT, to_rate, &layout, in_format, in_rate, 0,
                           nullptr);
  const int channels = layout.nb_channels;
  av_channel_layout_uninit(&layout);
  SwrPtr swr(raw);
  if (rc < 0 || !swr)
    return refused("cannot set up the audio resampler", rc < 0 ? rc : AVERROR(ENOMEM));
  // The SoX resampler (what librosa uses by default) when this FFmpeg has it.
  av_opt_set_int(swr.get(), "resampler", SWR_ENGINE_SOXR, 0);
  std::vector<double> mean(static_cast<size_t>(channels), 1.0 / channels);
  if ((rc = swr_set_matrix(swr.get(), mean.data(), channels)) < 0) {
    return refused("cannot set the downmix matrix", rc);
  }
  if (swr_init(swr.get()) < 0) {
    av_opt_set_int(swr.get(), "resampler", SWR_ENGINE_SWR, 0);
    if ((rc = swr_init(swr.get())) < 0) return refused("cannot start the audio resampler", rc);
  }
  return swr;
}

}  // namespace ffmpeg

namespace {

using ffmpeg::ErrorText;
using ffmpeg::SwrPtr;

// Output length of resampling `in` samples from `from` to `to` Hz: ceil(in * to / from), the
// length librosa gives.
int64_t ResampledLength(int64_t in, int from, int to) { return (in * to + from - 1) / from; }

// Converts `count` input samples (nullptr and 0 to flush) and appends them to `out`.
Status Convert(SwrContext* swr, const uint8_t** in, int count, std::vector<float>* out) {
  const int64_t room = swr_get_out_samples(swr, count) + 16;
  const size_t old = out->size();
  out->resize(old + static_cast<size_t>(room));
  uint8_t* dst = reinterpret_cast<uint8_t*>(out->data() + old);
  const int got = swr_convert(swr, &dst, static_cast<int>(room), in, count);
  if (got < 0) {
    out->resize(old);
    return Internal("resampling failed: " + ErrorText(got));
  }
  out->resize(old + static_cast<size_t>(got));
  return Status::Ok();
}

Status CheckRate(int rate, const char* what) {
  if (rate < 1000 || rate > 1000000) {
    return InvalidArgument(std::string(what) + " sample rate " + std::to_string(rate) +
                           " Hz is out of range (1000 to 1000000)");
  }
  return Status::Ok();
}

}  // namespace

Result<std::vector<float>> DecodeAudioFile(const std::string& path, int sample_rate) {
  LIPSYNC_RETURN_IF_ERROR(CheckRate(sample_rate, "the requested"));
  LIPSYNC_ASSIGN_OR_RETURN(std::unique_ptr<AudioReader> reader,
                           AudioReader::Open(path, sample_rate));
  std::vector<float> pcm;
  for (;;) {
    LIPSYNC_ASSIGN_OR_RETURN(size_t n, reader->Read(size_t{1} << 16, pcm));
    if (n == 0) break;
  }
  if (pcm.empty()) return InvalidArgument("audio file '" + path + "' holds no audio samples");
  return pcm;
}

Result<std::vector<float>> ResampleAudio(const std::vector<float>& pcm, int from_rate,
                                         int to_rate) {
  LIPSYNC_RETURN_IF_ERROR(CheckRate(from_rate, "the input"));
  LIPSYNC_RETURN_IF_ERROR(CheckRate(to_rate, "the output"));
  if (pcm.empty()) return std::vector<float>();
  if (from_rate == to_rate) return pcm;
  AVChannelLayout mono = AV_CHANNEL_LAYOUT_MONO;
  LIPSYNC_ASSIGN_OR_RETURN(SwrPtr swr,
                           ffmpeg::MakeMonoResampler(mono, AV_SAMPLE_FMT_FLT, from_rate, to_rate));
  std::vector<float> out;
  out.reserve(
      static_cast<size_t>(ResampledLength(static_cast<int64_t>(pcm.size()), from_rate, to_rate)) +
      64);
  // In blocks, so that the sample count fits swr_convert's int.
  constexpr size_t kBlock = 1 << 20;
  for (size_t pos = 0; pos < pcm.size(); pos += kBlock) {
    const size_t n = std::min(kBlock, pcm.size() - pos);
    const uint8_t* in = reinterpret_cast<const uint8_t*>(pcm.data() + pos);
    LIPSYNC_RETURN_IF_ERROR(Convert(swr.get(), &in, static_cast<int>(n), &out));
  }
  LIPSYNC_RETURN_IF_ERROR(Convert(swr.get(), nullptr, 0, &out));
  out.resize(
      static_cast<size_t>(ResampledLength(static_cast<int64_t>(pcm.size()), from_rate, to_rate)),
      0.0f);
  return out;
}

}  // namespace lipsync
