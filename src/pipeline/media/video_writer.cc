// The MP4 writer: libx264 (yuv420p) for the picture, FFmpeg's native AAC encoder for the sound,
// written to a hidden temp file beside the target and renamed only when everything succeeded.

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <vector>

#include "lipsync/video.h"
#include "pipeline/media/ffmpeg_util.h"
#include "pipeline/media/output_files.h"

extern "C" {
#include <libavutil/channel_layout.h>
#include <libavutil/opt.h>
}

namespace lipsync {

using namespace ffmpeg;  // NOLINT: the RAII helpers

struct VideoWriter::State {
  VideoWriterOptions options;
  std::string path;
  std::string tmp_path;
  AVFormatContext* format = nullptr;  // owned; freed in the destructor
  CodecContextPtr video;
  CodecContextPtr audio;
  AVStream* video_stream = nullptr;
  AVStream* audio_stream = nullptr;
  SwsPtr sws;
  FramePtr source;  // points at the caller's BGR frame during a conversion
  FramePtr picture;
  FramePtr sound;
  PacketPtr packet;
  std::vector<float> pending;  // audio given but not yet encoded
  int64_t frames = 0;
  int64_t audio_given = 0;
  int64_t audio_encoded = 0;  // samples sent to the encoder (its pts)
  bool finished = false;
  bool failed = false;

  ~State() {
    if (format) {
      if (format->pb) avio_closep(&format->pb);
      avformat_free_context(format);
    }
    if (!finished && !tmp_path.empty()) {
      std::error_code ec;
      std::filesystem::remove(tmp_path, ec);
    }
  }

  Status Fail(Status status) {
    failed = true;
    return status.WithContext("writing '" + path + "'");
  }

  // Moves every packet the encoder has ready into the file.
  Status Drain(AVCodecContext* codec, AVStream* stream) {
    while (true) {
      int rc = avcodec_receive_packet(codec, packet.get());
      if (rc == AVERROR(EAGAIN) || rc == AVERROR_EOF) return Status::Ok();
      if (rc < 0) return Internal(std::string(codec->codec->name) + " encoder: " + ErrorText(rc));
      av_packet_rescale_ts(packet.get(), codec->time_base, stream->time_base);
      packet->stream_index = stream->index;
      rc = av_interleaved_write_frame(format, packet.get());
      if (rc < 0) return Internal("cannot write to the file: " + ErrorText(rc));
    }
  }

  Status Encode(AVCodecContext* codec, AVStream* stream, const AVFrame* frame) {
    const int rc = avcodec_send_frame(codec, frame);
    if (rc < 0) return Internal(std::string(codec->codec->name) + " encoder: " + ErrorText(rc));
    return Drain(codec, stream);
  }

  // Encodes whole AAC frames from `pending` while the audio stays within `limit` samples; with
  // `final`, also the last partial frame.
  Status EncodeAudio(int64_t limit, bool final) {
    const int frame_size = audio->frame_size;
    size_t used = 0;
    while (true) {
      const int64_t available = static_cast<int64_t>(pending.size() - used);
      const int64_t room = limit - audio_encoded;
      int64_t n = std::min<int64_t>({frame_size, available, room});
      if (n <= 0 || (n < frame_size && !final)) break;
      int rc = av_frame_make_writable(sound.get());
      if (rc < 0) return Internal("audio frame: " + ErrorText(rc));
      sound->nb_samples = static_cast<int>(n);
      std::copy_n(pending.data() + used, n, reinterpret_cast<float*>(sound->data[0]));
      sound->pts = audio_encoded;
      LIPSYNC_RETURN_IF_ERROR(Encode(audio.get(), audio_stream, sound.get()));
      audio_encoded += n;
      used += static_cast<size_t>(n);
      if (n < frame_size) break;
    }
    pending.erase(pending.begin(), pending.begin() + static_cast<std::ptrdiff_t>(used));
    return Status::Ok();
  }

  Status OpenVideoEncoder(const AVOutputFormat* container);
  Status OpenAudioEncoder(const AVOutputFormat* container);

  int64_t SamplesFor(int64_t frame_count) const {
    return std::llround(static_cast<double>(frame_count) * options.audio_sample_rate / options.fps);
  }
};

Status VideoWriter::State::OpenVideoEncoder(const AVOutputFormat* container) {
  State& s = *this;
  const VideoWriterOptions& o = s.options;
  const AVCodec* codec = avcodec_find_encoder_by_name("libx264");
  if (!codec) return Unavailable("this FFmpeg has no libx264 encoder");
  s.video.reset(avcodec_alloc_context3(codec));
  if (!s.video) return ResourceExhausted("out of memory");
  AVCodecContext* c = s.video.get();
  const AVRational rate = av_d2q(o.fps, 100000);
  c->width = o.width;
  c->height = o.height;
  c->pix_fmt = AV_PIX_FMT_YUV420P;
  c->time_base = av_inv_q(rate);
  c->framerate = rate;
  c->thread_count = o.encoder_threads;
  // swscale converts with BT.601 coefficients into the limited range; say so in the stream.
  c->colorspace = AVCOL_SPC_SMPTE170M;
  c->color_primaries = AVCOL_PRI_SMPTE170M;
  c->color_trc = AVCOL_TRC_SMPTE170M;
  c->color_range = AVCOL_RANGE_MPEG;
  if (container->flags & AVFMT_GLOBALHEADER) c->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
  AVDictionary* opts = nullptr;
  av_dict_set(&opts, "preset", o.preset.c_str(), 0);
  av_dict_set(&opts, "crf", std::to_string(o.crf).c_str(), 0);
  int rc = avcodec_open2(c, codec, &opts);
  av_dict_free(&opts);
  if (rc < 0) {
    return InvalidArgument("cannot open libx264 (preset '" + o.preset + "', crf " +
                           std::to_string(o.crf) + "): " + ErrorText(rc));
  }
  s.video_stream = avformat_new_stream(s.format, nullptr);
  if (!s.video_stream) return ResourceExhausted("out of memory");
  s.video_stream->time_base = c->time_base;
  s.video_stream->avg_frame_rate = rate;
  rc = avcodec_parameters_from_context(s.video_stream->codecpar, c);
  if (rc < 0) return Internal("video stream parameters: " + ErrorText(rc));

  s.picture.reset(av_frame_alloc());
  if (!s.picture) return ResourceExhausted("out of memory");
  s.picture->format = c->pix_fmt;
  s.picture->width = o.width;
  s.picture->height = o.height;
  if ((rc = av_frame_get_buffer(s.picture.get(), 0)) < 0) {
    return ResourceExhausted("picture buffer: " + ErrorText(rc));
  }
  s.sws.reset(sws_alloc_context());
  if (!s.sws) return ResourceExhausted("out of memory");
  SwsContext* sws = s.sws.get();
  av_opt_set_int(sws, "srcw", o.width, 0);
  av_opt_set_int(sws, "srch", o.height, 0);
  av_opt_set_int(sws, "src_format", AV_PIX_FMT_BGR24, 0);
  av_opt_set_int(sws, "dstw", o.width, 0);
  av_opt_set_int(sws, "dsth", o.height, 0);
  av_opt_set_int(sws, "dst_format", AV_PIX_FMT_YUV420P, 0);
  av_opt_set_int(sws, "sws_flags", SWS_BICUBIC | SWS_ACCURATE_RND, 0);
  av_opt_set_int(sws, "threads", o.conversion_threads, 0);
  if ((rc = sws_init_context(sws, nullptr, nullptr)) < 0) {
    return Internal("cannot set up the BGR to YUV conversion: " + ErrorText(rc));
  }
  s.source.reset(av_frame_alloc());
  if (!s.source) return ResourceExhausted("out of memory");
  s.source->format = AV_PIX_FMT_BGR24;
  s.source->width = o.width;
  s.source->height = o.height;
  return Status::Ok();
}

Status VideoWriter::State::OpenAudioEncoder(const AVOutputFormat* container) {
  State& s = *this;
  const VideoWriterOptions& o = s.options;
  const AVCodec* codec = avcodec_find_encoder_by_name("aac");
  if (!codec) return Unavailable("this FFmpeg has no AAC encoder");
  s.audio.reset(avcodec_alloc_context3(codec));
  if (!s.audio) return ResourceExhausted("out of memory");
  AVCodecContext* c = s.audio.get();
  c->sample_fmt = AV_SAMPLE_FMT_FLTP;  // mono: planar and packed float are the same bytes
  c->sample_rate = o.audio_sample_rate;
  c->bit_rate = o.audio_bitrate;
  c->time_base = AVRational{1, o.audio_sample_rate};
  av_channel_layout_default(&c->ch_layout, 1);
  if (container->flags & AVFMT_GLOBALHEADER) c->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
  int rc = avcodec_open2(c, codec, nullptr);
  if (rc < 0) return InvalidArgument("cannot open the AAC encoder: " + ErrorText(rc));
  s.audio_stream = avformat_new_stream(s.format, nullptr);
  if (!s.audio_stream) return ResourceExhausted("out of memory");
  s.audio_stream->time_base = c->time_base;
  rc = avcodec_parameters_from_context(s.audio_stream->codecpar, c);
  if (rc < 0) return Internal("audio stream parameters: " + ErrorText(rc));
  s.sound.reset(av_frame_alloc());
  if (!s.sound) return ResourceExhausted("out of memory");
  s.sound->format = c->sample_fmt;
  s.sound->sample_rate = c->sample_rate;
  s.sound->nb_samples = c->frame_size;
  av_channel_layout_copy(&s.sound->ch_layout, &c->ch_layout);
  if ((rc = av_frame_get_buffer(s.sound.get(), 0)) < 0) {
    return ResourceExhausted("audio buffer: " + ErrorText(rc));
  }
  return Status::Ok();
}

VideoWriter::VideoWriter(std::unique_ptr<State> state) : state_(std::move(state)) {}
VideoWriter::~VideoWriter() = default;

Result<std::unique_ptr<VideoWriter>> VideoWriter::Create(const std::string& path,
                                                         const VideoWriterOptions& options) {
  QuietLogs();
  if (options.width <= 0 || options.height <= 0 || options.width % 2 || options.height % 2) {
    return InvalidArgument("video '" + path + "': H.264 in yuv420p needs a positive, even width " +
                           "and height, got " + std::to_string(options.width) + "x" +
                           std::to_string(options.height));
  }
  if (!(options.fps > 0.0 && options.fps <= 1000.0)) {
    return InvalidArgument("video '" + path + "': frame rate " + std::to_string(options.fps) +
                           " is out of range");
  }
  if (options.crf < 0 || options.crf > 51) {  // libx264 would clamp it without a word
    return InvalidArgument("video '" + path + "': crf " + std::to_string(options.crf) +
                           " is outside H.264's 0..51");
  }
  if (options.conversion_threads < 1) {
    return InvalidArgument("video '" + path + "': conversion threads " +
                           std::to_string(options.conversion_threads) + " must be 1 or more");
  }
  if (options.encoder_threads < 0) {
    return InvalidArgument("video '" + path + "': encoder threads " +
                           std::to_string(options.encoder_threads) +
                           " must be 0 (automatic) or more");
  }
  if (options.audio && (options.audio_sample_rate < 8000 || options.audio_sample_rate > 96000)) {
    return InvalidArgument("video '" + path + "': audio sample rate " +
                           std::to_string(options.audio_sample_rate) + " is out of range");
  }
  const std::filesystem::path target(path);
  std::error_code ec;
  const auto folder =
      target.parent_path().empty() ? std::filesystem::path(".") : target.parent_path();
  if (!std::filesystem::is_directory(folder, ec)) {
    return NotFound("video '" + path + "': folder '" + folder.string() + "' does not exist");
  }
  if (std::filesystem::is_directory(target, ec)) {
    return InvalidArgument("video '" + path + "' is a folder");
  }
  const AVOutputFormat* container = av_guess_format(nullptr, path.c_str(), nullptr);
  if (!container) {
    return InvalidArgument("video '" + path + "': no container for this extension (use .mp4)");
  }
  // A container that says it cannot hold H.264 or AAC (WebM, for one) is refused before any work;
  // one that does not say (GIF) refuses at the header, with the same message.
  const bool holds_video = avformat_query_codec(container, AV_CODEC_ID_H264, 0) != 0;
  const bool holds_audio = !options.audio || avformat_query_codec(container, AV_CODEC_ID_AAC, 0);
  const std::string unfit = "video '" + path + "': the " + container->name +
                            " container cannot hold H.264 video" +
                            (options.audio ? " with AAC audio" : "") + " (use .mp4, .mkv or .mov)";
  if (!holds_video || !holds_audio) return InvalidArgument(unfit);

  auto s = std::make_unique<State>();
  s->options = options;
  s->path = path;
  const std::string tmp = internal::HiddenTempPath(path);
  int rc = avformat_alloc_output_context2(&s->format, container, nullptr, tmp.c_str());
  if (rc < 0 || !s->format) return Internal("cannot set up the muxer: " + ErrorText(rc));
  s->packet.reset(av_packet_alloc());
  if (!s->packet) return ResourceExhausted("out of memory");
  LIPSYNC_RETURN_IF_ERROR(s->OpenVideoEncoder(container).WithContext("video '" + path + "'"));
  if (options.audio) {
    LIPSYNC_RETURN_IF_ERROR(s->OpenAudioEncoder(container).WithContext("video '" + path + "'"));
  }
  rc = avio_open(&s->format->pb, tmp.c_str(), AVIO_FLAG_WRITE);
  if (rc < 0) {
    return InvalidArgument("video '" + path + "': cannot write in '" + folder.string() +
                           "': " + ErrorText(rc));
  }
  s->tmp_path = tmp;  // from here on the destructor removes it
  AVDictionary* mux_options = nullptr;
  av_dict_set(&mux_options, "movflags", "+faststart", 0);  // index first: playable while loading
  rc = avformat_write_header(s->format, &mux_options);
  av_dict_free(&mux_options);
  if (rc == AVERROR(EINVAL)) return InvalidArgument(unfit);
  if (rc < 0) return Internal("video '" + path + "': cannot write the header: " + ErrorText(rc));
  return std::unique_ptr<VideoWriter>(new VideoWriter(std::move(s)));
}

Status VideoWriter::WriteFrame(const Image& frame) {
  State& s = *state_;
  if (s.failed || s.finished) return FailedPrecondition("video '" + s.path + "' is closed");
  if (frame.width != s.options.width || frame.height != s.options.height ||
      frame.bgr.size() != static_cast<size_t>(frame.width) * frame.height * 3) {
    return s.Fail(InvalidArgument("frame " + std::to_string(s.frames) + " is " +
                                  std::to_string(frame.width) + "x" + std::to_string(frame.height) +
                                  ", the video is " + std::to_string(s.options.width) + "x" +
                                  std::to_string(s.options.height)));
  }
  int rc = av_frame_make_writable(s.picture.get());
  if (rc < 0) return s.Fail(Internal("picture buffer: " + ErrorText(rc)));
  // The source frame borrows the caller's pixels for this call: a buffer that frees nothing, so
  // that swscale references them instead of copying the frame.
  uint8_t* pixels = const_cast<uint8_t*>(frame.bgr.data());
  s.source->buf[0] = av_buffer_create(
      pixels, frame.bgr.size(), [](void*, uint8_t*) {}, nullptr, AV_BUFFER_FLAG_READONLY);
  if (!s.source->buf[0]) return s.Fail(ResourceExhausted("out of memory"));
  s.source->data[0] = pixels;
  s.source->linesize[0] = frame.width * 3;
  rc = sws_scale_frame(s.sws.get(), s.picture.get(), s.source.get());
  av_buffer_unref(&s.source->buf[0]);
  s.source->data[0] = nullptr;
  if (rc < 0) return s.Fail(Internal("BGR to YUV conversion: " + ErrorText(rc)));
  s.picture->pts = s.frames;
  Status st = s.Encode(s.video.get(), s.video_stream, s.picture.get());
  if (!st.ok()) return s.Fail(st);
  ++s.frames;
  if (s.audio) {
    st = s.EncodeAudio(s.SamplesFor(s.frames), false);
    if (!st.ok()) return s.Fail(st);
  }
  return Status::Ok();
}

Status VideoWriter::WriteAudio(const float* pcm, size_t count) {
  State& s = *state_;
  if (s.failed || s.finished) return FailedPrecondition("video '" + s.path + "' is closed");
  if (!s.audio) return FailedPrecondition("video '" + s.path + "' was opened without audio");
  s.pending.insert(s.pending.end(), pcm, pcm + count);
  s.audio_given += static_cast<int64_t>(count);
  Status st = s.EncodeAudio(s.SamplesFor(s.frames), false);
  return st.ok() ? st : s.Fail(st);
}

int64_t VideoWriter::AudioSamplesFor(int64_t frames) const { return state_->SamplesFor(frames); }
int64_t VideoWriter::frames_written() const { return state_->frames; }
int64_t VideoWriter::audio_samples_written() const { return state_->audio_given; }
const std::string& VideoWriter::path() const { return state_->path; }

Status VideoWriter::Finish() {
  State& s = *state_;
  if (s.failed || s.finished) return FailedPrecondition("video '" + s.path + "' is closed");
  if (s.frames == 0) return s.Fail(InvalidArgument("no frames were written"));
  Status st = s.Encode(s.video.get(), s.video_stream, nullptr);
  if (st.ok() && s.audio) {
    // The sound track ends with the picture: cut, or padded with silence when it is short.
    const int64_t target = s.SamplesFor(s.frames);
    const int64_t have = s.audio_encoded + static_cast<int64_t>(s.pending.size());
    if (have < target) s.pending.resize(s.pending.size() + static_cast<size_t>(target - have));
    st = s.EncodeAudio(target, true);
    if (st.ok()) st = s.Encode(s.audio.get(), s.audio_stream, nullptr);
  }
  if (!st.ok()) return s.Fail(st);
  int rc = av_write_trailer(s.format);
  if (rc < 0) return s.Fail(Internal("cannot finish the file: " + ErrorText(rc)));
  rc = avio_closep(&s.format->pb);
  if (rc < 0) return s.Fail(Internal("cannot close the file: " + ErrorText(rc)));
  std::error_code ec;
  std::filesystem::rename(s.tmp_path, s.path, ec);
  if (ec) return s.Fail(Internal("cannot rename the finished file into place: " + ec.message()));
  s.finished = true;
  return Status::Ok();
}

}  // namespace lipsync
