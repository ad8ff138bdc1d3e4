// The audio of a media file, decoded and resampled a chunk at a time: mean of the channels, the
// shared mono resampler, each segment of constant format cut to ceil(in * rate_out / rate_in)
// samples. DecodeAudioFile() reads whole files through it.
#include <algorithm>
#include <cmath>
#include <deque>
#include <filesystem>
#include <vector>

#include "lipsync/video.h"
#include "pipeline/media/ffmpeg_util.h"

extern "C" {
#include <libavutil/channel_layout.h>
}

namespace lipsync {

using namespace ffmpeg;  // NOLINT: the RAII helpers

struct AudioReader::State {
  std::string path;
  int rate = 0;
  InputFormatPtr format;
  CodecContextPtr codec;
  int stream_index = -1;
  PacketPtr packet;
  FramePtr frame;
  SwrPtr swr;
  AVChannelLayout layout = {};
  AVSampleFormat sample_format = AV_SAMPLE_FMT_NONE;
  int in_rate = 0;
  int64_t segment_in = 0;   // input samples of the current constant-format segment
  int64_t segment_out = 0;  // output samples produced for it
  std::deque<float> ready;  // converted, not yet handed out
  int64_t damaged_packets = 0;
  int64_t samples_out = 0;
  int64_t total_in = 0;  // input samples over all segments
  int first_in_rate = 0;
  bool input_done = false;  // no more packets; decoder and resampler flushed

  ~State() { av_channel_layout_uninit(&layout); }

  Status Convert(const uint8_t* const* in, int count) {
    const int room = swr_get_out_samples(swr.get(), count) + 16;
    std::vector<float> out(static_cast<size_t>(room));
    uint8_t* dst = reinterpret_cast<uint8_t*>(out.data());
    const int got = swr_convert(swr.get(), &dst, room, const_cast<const uint8_t**>(in), count);
    if (got < 0) return Internal("resampling failed: " + ErrorText(got));
    ready.insert(ready.end(), out.begin(), out.begin() + got);
    segment_out += got;
    return Status::Ok();
  }

  // Drains the resampler and makes the segment exactly ceil(in * rate / in_rate) samples long.
  Status EndSegment() {
    if (!swr) return Status::Ok();
    LIPSYNC_RETURN_IF_ERROR(Convert(nullptr, 0));
    const int64_t want = (segment_in * rate + in_rate - 1) / in_rate;
    if (segment_out > want) {
      const int64_t extra = std::min<int64_t>(segment_out - want, ready.size());
      ready.erase(ready.end() - extra, ready.end());
    } else {
      ready.insert(ready.end(), static_cast<size_t>(want - segment_out), 0.0f);
    }
    swr.reset();
    return Status::Ok();
  }

  Status StartSegment(const AVFrame& f) {
    LIPSYNC_RETURN_IF_ERROR(EndSegment());
    if (f.sample_rate < 1000 || f.sample_rate > 1000000) {
      return DataLoss("the stream's sample rate " + std::to_string(f.sample_rate) +
                      " Hz is out of range");
    }
    auto made =
        MakeMonoResampler(f.ch_layout, static_cast<AVSampleFormat>(f.format), f.sample_rate, rate);
    if (!made.ok() && made.status().code() == StatusCode::kInvalidArgument) {
      return DataLoss("the stream's audio cannot be converted: " + made.status().message());
    }
    LIPSYNC_ASSIGN_OR_RETURN(swr, std::move(made));
    av_channel_layout_uninit(&layout);
    av_channel_layout_copy(&layout, &f.ch_layout);
    sample_format = static_cast<AVSampleFormat>(f.format);
    in_rate = f.sample_rate;
    segment_in = 0;
    segment_out = 0;
    return Status::Ok();
  }

  Status Consume(const AVFrame& f) {
    if (!swr || f.format != sample_format || f.sample_rate != in_rate ||
        av_channel_layout_compare(&f.ch_layout, &layout) != 0) {
      LIPSYNC_RETURN_IF_ERROR(StartSegment(f));
    }
    segment_in += f.nb_samples;
    total_in += f.nb_samples;
    if (first_in_rate == 0) first_in_rate = f.sample_rate;
    return Convert(f.extended_data, f.nb_samples);
  }

  Status ReceiveAll() {
    while (true) {
      int rc = avcodec_receive_frame(codec.get(), frame.get());
      if (rc == AVERROR(EAGAIN) || rc == AVERROR_EOF) return Status::Ok();
      if (rc == AVERROR_INVALIDDATA) {
        ++damaged_packets;
        continue;
      }
      if (rc < 0) return DataLoss("audio decoding failed: " + ErrorText(rc));
      Status st = Consume(*frame);
      av_frame_unref(frame.get());
      LIPSYNC_RETURN_IF_ERROR(st);
    }
  }

  // A container that states its length (WAV header, MP4 index) but yields clearly less audio
  // was cut short.
  Status CheckComplete() const {
    const AVStream* stream = format->streams[stream_index];
    if (format->duration_estimation_method != AVFMT_DURATION_FROM_STREAM ||
        stream->duration == AV_NOPTS_VALUE || stream->duration <= 0 || first_in_rate == 0) {
      return Status::Ok();
    }
    const double declared = static_cast<double>(stream->duration) * av_q2d(stream->time_base);
    const double decoded = static_cast<double>(total_in) / first_in_rate;
    if (decoded < declared * 0.99 - 0.05) {
      return DataLoss("the file is truncated: it declares " + std::to_string(declared) +
                      " s of audio but holds " + std::to_string(decoded) + " s");
    }
    return Status::Ok();
  }

  // Reads packets until some samples are ready or the input ends.
  Status Fill() {
    while (ready.empty() && !input_done) {
      int rc = av_read_frame(format.get(), packet.get());
      if (rc == AVERROR_EOF) {
        avcodec_send_packet(codec.get(), nullptr);
        LIPSYNC_RETURN_IF_ERROR(ReceiveAll());
        LIPSYNC_RETURN_IF_ERROR(EndSegment());
        input_done = true;
        return CheckComplete();
      }
      if (rc < 0) return DataLoss("the file is damaged: " + ErrorText(rc));
      if (packet->stream_index == stream_index && (packet->flags & AV_PKT_FLAG_CORRUPT)) {
        // The demuxer's mark for a packet the file ends inside of (a cut WAV, for one).
        const AVStream* stream = format->streams[stream_index];
        const double at = static_cast<double>(packet->pts) * av_q2d(stream->time_base);
        av_packet_unref(packet.get());
        return DataLoss("the file is truncated or damaged: an audio packet at " +
                        std::to_string(at) + " s is cut short");
      }
      if (packet->stream_index == stream_index) {
        rc = avcodec_send_packet(codec.get(), packet.get());
        if (rc == AVERROR_INVALIDDATA) {
          ++damaged_packets;  // skipped, as FFmpeg's tools do
        } else if (rc < 0) {
          av_packet_unref(packet.get());
          return DataLoss("audio decoding failed: " + ErrorText(rc));
        }
      }
      av_packet_unref(packet.get());
      LIPSYNC_RETURN_IF_ERROR(ReceiveAll());
    }
    return Status::Ok();
  }
};

AudioReader::AudioReader(std::unique_ptr<State> state) : state_(std::move(state)) {}
AudioReader::~AudioReader() = default;

Result<std::unique_ptr<AudioReader>> AudioReader::Open(const std::string& path, int sample_rate) {
  QuietLogs();
  if (sample_rate < 1000 || sample_rate > 1000000) {
    return InvalidArgument("sample rate " + std::to_string(sample_rate) + " Hz is out of range");
  }
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return NotFound("audio file '" + path + "' not found");
  if (std::filesystem::is_directory(path, ec)) {
    return InvalidArgument("audio file '" + path + "' is a folder");
  }
  auto s = std::make_unique<State>();
  s->path = path;
  s->rate = sample_rate;
  AVFormatContext* raw = nullptr;
  int rc = avformat_open_input(&raw, path.c_str(), nullptr, nullptr);
  if (rc < 0) {
    return DataLoss("audio file '" + path + "' cannot be read as audio: " + ErrorText(rc));
  }
  s->format.reset(raw);
  if ((rc = avformat_find_stream_info(s->format.get(), nullptr)) < 0) {
    return DataLoss("audio file '" + path + "' is damaged: " + ErrorText(rc));
  }
  const AVCodec* decoder = nullptr;
  s->stream_index = av_find_best_stream(s->format.get(), AVMEDIA_TYPE_AUDIO, -1, -1, &decoder, 0);
  if (s->stream_index == AVERROR_STREAM_NOT_FOUND) {
    return InvalidArgument("file '" + path + "' has no audio stream (read as " +
                           s->format->iformat->name + ")");
  }
  if (s->stream_index < 0 || !decoder) {
    return Unimplemented("file '" + path + "': no decoder for its audio stream");
  }
  s->codec.reset(avcodec_alloc_context3(decoder));
  if (!s->codec) return ResourceExhausted("out of memory");
  if ((rc = avcodec_parameters_to_context(s->codec.get(),
                                          s->format->streams[s->stream_index]->codecpar)) < 0 ||
      (rc = avcodec_open2(s->codec.get(), decoder, nullptr)) < 0) {
    return DataLoss("audio file '" + path + "': cannot open the " + decoder->name +
                    " decoder: " + ErrorText(rc));
  }
  s->packet.reset(av_packet_alloc());
  s->frame.reset(av_frame_alloc());
  if (!s->packet || !s->frame) return ResourceExhausted("out of memory");
  return std::unique_ptr<AudioReader>(new AudioReader(std::move(s)));
}

Result<size_t> AudioReader::Read(size_t max_samples, std::vector<float>& out) {
  State& s = *state_;
  if (Status st = s.Fill(); !st.ok()) return st.WithContext("audio file '" + s.path + "'");
  const size_t n = std::min(max_samples, s.ready.size());
  for (size_t i = 0; i < n; ++i) {
    const float v = s.ready[i];
    if (!std::isfinite(v)) {
      return DataLoss("audio file '" + s.path + "' decodes to non-finite samples");
    }
    out.push_back(v);
  }
  s.ready.erase(s.ready.begin(), s.ready.begin() + static_cast<std::ptrdiff_t>(n));
  s.samples_out += static_cast<int64_t>(n);
  if (n == 0 && s.samples_out == 0 && s.damaged_packets > 0) {
    return DataLoss("audio file '" + s.path + "' is damaged: none of its " +
                    std::to_string(s.damaged_packets) + " audio packets decode");
  }
  return n;
}

double AudioReader::duration_seconds() const {
  const AVFormatContext* f = state_->format.get();
  return f->duration != AV_NOPTS_VALUE && f->duration > 0
             ? static_cast<double>(f->duration) / AV_TIME_BASE
             : 0.0;
}

int AudioReader::sample_rate() const { return state_->rate; }

}  // namespace lipsync
