// Audio files to mono float PCM with FFmpeg: libavformat demuxes, libavcodec decodes, libswresample
// downmixes (the mean of the channels, as librosa's to_mono) and resamples (the SoX resampler when
// this FFmpeg has it, else FFmpeg's own).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "lipsync/audio.h"

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/channel_layout.h>
#include <libavutil/error.h>
#include <libavutil/opt.h>
#include <libswresample/swresample.h>
}

namespace lipsync {
namespace {

std::string AvError(int code) {
  char buf[AV_ERROR_MAX_STRING_SIZE] = {};
  av_strerror(code, buf, sizeof(buf));
  return buf;
}

struct FormatCloser {
  void operator()(AVFormatContext* p) const { avformat_close_input(&p); }
};
struct CodecFreer {
  void operator()(AVCodecContext* p) const { avcodec_free_context(&p); }
};
struct SwrFreer {
  void operator()(SwrContext* p) const { swr_free(&p); }
};
struct PacketFreer {
  void operator()(AVPacket* p) const { av_packet_free(&p); }
};
struct FrameFreer {
  void operator()(AVFrame* p) const { av_frame_free(&p); }
};
using SwrPtr = std::unique_ptr<SwrContext, SwrFreer>;

// Output length of resampling `in` samples from `from` to `to` Hz: ceil(in * to / from), the
// length librosa gives.
int64_t ResampledLength(int64_t in, int from, int to) { return (in * to + from - 1) / from; }

// A resampler from (layout, format, rate) to mono float at `to_rate`, downmixing by the mean of
// the channels.
Result<SwrPtr> MakeResampler(const AVChannelLayout& in_layout, AVSampleFormat in_format,
                             int in_rate, int to_rate) {
  AVChannelLayout layout = {};
  if (in_layout.order == AV_CHANNEL_ORDER_UNSPEC || in_layout.nb_channels <= 0) {
    av_channel_layout_default(&layout, in_layout.nb_channels > 0 ? in_layout.nb_channels : 1);
  } else if (av_channel_layout_copy(&layout, &in_layout) < 0) {
    return Internal("cannot copy the audio channel layout");
  }
  AVChannelLayout mono = AV_CHANNEL_LAYOUT_MONO;
  SwrContext* raw = nullptr;
  int rc = swr_alloc_set_opts2(&raw, &mono, AV_SAMPLE_FMT_FLT, to_rate, &layout, in_format, in_rate,
                               0, nullptr);
  const int channels = layout.nb_channels;
  av_channel_layout_uninit(&layout);
  SwrPtr swr(raw);
  if (rc < 0 || !swr) return Internal("cannot set up the audio resampler: " + AvError(rc));
  // The SoX resampler (what librosa uses by default) when this FFmpeg has it.
  av_opt_set_int(swr.get(), "resampler", SWR_ENGINE_SOXR, 0);
  std::vector<double> mean(static_cast<size_t>(channels), 1.0 / channels);
  if ((rc = swr_set_matrix(swr.get(), mean.data(), channels)) < 0) {
    return Internal("cannot set the downmix matrix: " + AvError(rc));
  }
  if (swr_init(swr.get()) < 0) {
    av_opt_set_int(swr.get(), "resampler", SWR_ENGINE_SWR, 0);
    if ((rc = swr_init(swr.get())) < 0) {
      return Internal("cannot start the audio resampler: " + AvError(rc));
    }
  }
  return swr;
}

// Converts `count` input samples (nullptr and 0 to flush) and appends them to `out`.
Status Convert(SwrContext* swr, const uint8_t** in, int count, std::vector<float>* out) {
  const int64_t room = swr_get_out_samples(swr, count) + 16;
  const size_t old = out->size();
  out->resize(old + static_cast<size_t>(room));
  uint8_t* dst = reinterpret_cast<uint8_t*>(out->data() + old);
  const int got = swr_convert(swr, &dst, static_cast<int>(room), in, count);
  if (got < 0) {
    out->resize(old);
    return Internal("resampling failed: " + AvError(got));
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

// Decodes every frame of one audio stream into `pcm`, resampling as it goes. The resampler is
// rebuilt (after flushing) when the stream changes format midway.
class StreamDecoder {
 public:
  StreamDecoder(AVCodecContext* codec, int to_rate) : codec_(codec), to_rate_(to_rate) {}
  ~StreamDecoder() { av_channel_layout_uninit(&layout_); }
  StreamDecoder(const StreamDecoder&) = delete;
  StreamDecoder& operator=(const StreamDecoder&) = delete;

  Status Send(const AVPacket* packet) {
    int rc = avcodec_send_packet(codec_, packet);
    if (rc == AVERROR_INVALIDDATA) {  // a damaged packet: skip it, as FFmpeg's tools do
      ++damaged_packets_;
      return Status::Ok();
    }
    if (rc < 0 && rc != AVERROR_EOF) return DataLoss("audio decoding failed: " + AvError(rc));
    return Receive();
  }

  Status Finish() {
    LIPSYNC_RETURN_IF_ERROR(Send(nullptr));
    if (swr_) LIPSYNC_RETURN_IF_ERROR(Flush());
    return Status::Ok();
  }

  std::vector<float>& pcm() { return pcm_; }
  int64_t damaged_packets() const { return damaged_packets_; }
  int64_t input_samples() const { return total_in_; }
  int input_rate() const { return first_rate_; }

 private:
  Status Receive() {
    std::unique_ptr<AVFrame, FrameFreer> frame(av_frame_alloc());
    if (!frame) return ResourceExhausted("out of memory decoding audio");
    while (true) {
      int rc = avcodec_receive_frame(codec_, frame.get());
      if (rc == AVERROR(EAGAIN) || rc == AVERROR_EOF) return Status::Ok();
      if (rc == AVERROR_INVALIDDATA) {
        ++damaged_packets_;
        continue;
      }
      if (rc < 0) return DataLoss("audio decoding failed: " + AvError(rc));
      LIPSYNC_RETURN_IF_ERROR(Consume(*frame));
      av_frame_unref(frame.get());
    }
  }

  Status Consume(const AVFrame& frame) {
    const auto format = static_cast<AVSampleFormat>(frame.format);
    const bool changed = !swr_ || format != format_ || frame.sample_rate != rate_ ||
                         av_channel_layout_compare(&frame.ch_layout, &layout_) != 0;
    if (changed) {
      if (swr_) LIPSYNC_RETURN_IF_ERROR(Flush());
      LIPSYNC_RETURN_IF_ERROR(CheckRate(frame.sample_rate, "the file's"));
      LIPSYNC_ASSIGN_OR_RETURN(swr_,
                               MakeResampler(frame.ch_layout, format, frame.sample_rate, to_rate_));
      av_channel_layout_uninit(&layout_);
      if (av_channel_layout_copy(&layout_, &frame.ch_layout) < 0) {
        return Internal("cannot copy the audio channel layout");
      }
      format_ = format;
      rate_ = frame.sample_rate;
      if (first_rate_ == 0) first_rate_ = rate_;
      segment_in_ = 0;
      segment_start_ = static_cast<int64_t>(pcm_.size());
    }
    segment_in_ += frame.nb_samples;
    total_in_ += frame.nb_samples;
    return Convert(swr_.get(), const_cast<const uint8_t**>(frame.extended_data), frame.nb_samples,
                   &pcm_);
  }

  // Drains the resampler and trims the segment to its exact resampled length.
  Status Flush() {
    LIPSYNC_RETURN_IF_ERROR(Convert(swr_.get(), nullptr, 0, &pcm_));
    const int64_t want = segment_start_ + ResampledLength(segment_in_, rate_, to_rate_);
    pcm_.resize(static_cast<size_t>(want), 0.0f);
    swr_.reset();
    return Status::Ok();
  }

  AVCodecContext* codec_;
  int to_rate_;
  SwrPtr swr_;
  AVChannelLayout layout_ = {};
  AVSampleFormat format_ = AV_SAMPLE_FMT_NONE;
  int rate_ = 0;
  int first_rate_ = 0;
  int64_t segment_in_ = 0;
  int64_t segment_start_ = 0;
  int64_t total_in_ = 0;
  int64_t damaged_packets_ = 0;
  std::vector<float> pcm_;
};

}  // namespace

Result<std::vector<float>> DecodeAudioFile(const std::string& path, int sample_rate) {
  LIPSYNC_RETURN_IF_ERROR(CheckRate(sample_rate, "the requested"));
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return NotFound("audio file '" + path + "' not found");
  if (std::filesystem::is_directory(path, ec)) {
    return InvalidArgument("audio file '" + path + "' is a directory");
  }
  // FFmpeg's own log would repeat on stderr what the returned Status says.
  static std::once_flag quiet;
  std::call_once(quiet, [] { av_log_set_level(AV_LOG_QUIET); });

  AVFormatContext* raw_format = nullptr;
  int rc = avformat_open_input(&raw_format, path.c_str(), nullptr, nullptr);
  if (rc < 0) {
    return DataLoss("audio file '" + path + "' cannot be read as audio: " + AvError(rc));
  }
  std::unique_ptr<AVFormatContext, FormatCloser> format(raw_format);
  if ((rc = avformat_find_stream_info(format.get(), nullptr)) < 0) {
    return DataLoss("audio file '" + path + "' is damaged: " + AvError(rc));
  }
  const AVCodec* decoder = nullptr;
  const int index = av_find_best_stream(format.get(), AVMEDIA_TYPE_AUDIO, -1, -1, &decoder, 0);
  if (index == AVERROR_STREAM_NOT_FOUND) {
    return InvalidArgument("file '" + path + "' has no audio stream (read as " +
                           format->iformat->name + ")");
  }
  if (index < 0 || !decoder) {
    return Unimplemented("file '" + path + "': no decoder for its audio stream (" + AvError(index) +
                         ")");
  }
  AVStream* stream = format->streams[index];
  std::unique_ptr<AVCodecContext, CodecFreer> codec(avcodec_alloc_context3(decoder));
  if (!codec) return ResourceExhausted("out of memory opening '" + path + "'");
  if ((rc = avcodec_parameters_to_context(codec.get(), stream->codecpar)) < 0 ||
      (rc = avcodec_open2(codec.get(), decoder, nullptr)) < 0) {
    return DataLoss("audio file '" + path + "': cannot open the " + decoder->name +
                    " decoder: " + AvError(rc));
  }

  StreamDecoder decode(codec.get(), sample_rate);
  std::unique_ptr<AVPacket, PacketFreer> packet(av_packet_alloc());
  if (!packet) return ResourceExhausted("out of memory reading '" + path + "'");
  while ((rc = av_read_frame(format.get(), packet.get())) >= 0) {
    Status sent = Status::Ok();
    if (packet->stream_index == index) {
      // A demuxer marks a packet corrupt when the file ends inside it (a cut WAV, for one).
      if (packet->flags & AV_PKT_FLAG_CORRUPT) {
        return DataLoss(
            "audio file '" + path + "' is truncated or damaged: an audio packet at " +
            std::to_string(static_cast<double>(packet->pts) * av_q2d(stream->time_base)) +
            " s is cut short");
      }
      sent = decode.Send(packet.get());
    }
    av_packet_unref(packet.get());
    if (!sent.ok()) return sent.WithContext("audio file '" + path + "'");
  }
  if (rc != AVERROR_EOF) {
    return DataLoss("audio file '" + path + "' is damaged: " + AvError(rc));
  }
  if (Status s = decode.Finish(); !s.ok()) return s.WithContext("audio file '" + path + "'");

  if (decode.pcm().empty()) {
    if (decode.damaged_packets() > 0) {
      return DataLoss("audio file '" + path + "' is damaged: none of its " +
                      std::to_string(decode.damaged_packets()) + " audio packets decode");
    }
    return InvalidArgument("audio file '" + path + "' holds no audio samples");
  }
  // A container that states its length (a WAV header, an MP3 Xing header, an MP4 index) but
  // yields clearly less audio was cut short.
  if (format->duration_estimation_method == AVFMT_DURATION_FROM_STREAM &&
      stream->duration != AV_NOPTS_VALUE && stream->duration > 0 && decode.input_rate() > 0) {
    const double declared = static_cast<double>(stream->duration) * av_q2d(stream->time_base);
    const double decoded = static_cast<double>(decode.input_samples()) / decode.input_rate();
    if (decoded < declared * 0.99 - 0.05) {
      return DataLoss("audio file '" + path + "' is truncated: it declares " +
                      std::to_string(declared) + " s of audio but holds " +
                      std::to_string(decoded) + " s");
    }
  }
  for (float v : decode.pcm()) {
    if (!std::isfinite(v)) {
      return DataLoss("audio file '" + path + "' decodes to non-finite samples");
    }
  }
  return std::move(decode.pcm());
}

Result<std::vector<float>> ResampleAudio(const std::vector<float>& pcm, int from_rate,
                                         int to_rate) {
  LIPSYNC_RETURN_IF_ERROR(CheckRate(from_rate, "the input"));
  LIPSYNC_RETURN_IF_ERROR(CheckRate(to_rate, "the output"));
  if (pcm.empty()) return std::vector<float>();
  if (from_rate == to_rate) return pcm;
  AVChannelLayout mono = AV_CHANNEL_LAYOUT_MONO;
  LIPSYNC_ASSIGN_OR_RETURN(SwrPtr swr, MakeResampler(mono, AV_SAMPLE_FMT_FLT, from_rate, to_rate));
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
