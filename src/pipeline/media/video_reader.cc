// Frames of a video file by index. Opening scans the packets once (no decoding) to learn every
// frame's timestamp and the key frames, so that any index can be reached by seeking to the key
// frame before it and decoding forward.
#include <algorithm>
#include <filesystem>
#include <vector>

#include "lipsync/video.h"
#include "pipeline/media/ffmpeg_util.h"

namespace lipsync {

using namespace ffmpeg;  // NOLINT: the RAII helpers

struct VideoReader::State {
  std::string path;
  InputFormatPtr format;
  CodecContextPtr codec;
  int stream_index = -1;
  int width = 0, height = 0;
  double fps = 0.0;
  std::vector<int64_t> pts;      // every frame's timestamp, presentation order
  std::vector<int64_t> key_pts;  // key frames' timestamps, ascending
  PacketPtr packet;
  FramePtr frame;
  SwsContext* sws = nullptr;  // sws_getCachedContext owns and reuses it
  int64_t next_index = 0;     // the frame the decoder will produce next without seeking
  bool draining = false;      // the end of the file was reached and the decoder flushed

  ~State() { sws_freeContext(sws); }

  // The frame index of a decoded timestamp: the nearest scanned timestamp.
  int64_t IndexOf(int64_t t) const {
    auto it = std::lower_bound(pts.begin(), pts.end(), t);
    if (it == pts.end()) return static_cast<int64_t>(pts.size()) - 1;
    if (it != pts.begin() && (t - *(it - 1)) < (*it - t)) --it;
    return it - pts.begin();
  }

  Status SeekBefore(int64_t index) {
    const int64_t target = pts[static_cast<size_t>(index)];
    auto it = std::upper_bound(key_pts.begin(), key_pts.end(), target);
    const int64_t key = it == key_pts.begin() ? pts.front() : *(it - 1);
    int rc = av_seek_frame(format.get(), stream_index, key, AVSEEK_FLAG_BACKWARD);
    if (rc < 0)
      return DataLoss("cannot seek to frame " + std::to_string(index) + ": " + ErrorText(rc));
    avcodec_flush_buffers(codec.get());
    draining = false;
    next_index = -1;  // unknown until the next frame is decoded
    return Status::Ok();
  }

  // Decodes the next frame into `frame`; NotFound at the end of the stream.
  Status DecodeNext() {
    while (true) {
      int rc = avcodec_receive_frame(codec.get(), frame.get());
      if (rc == 0) return Status::Ok();
      if (rc == AVERROR_EOF) return NotFound("end of the video");
      if (rc != AVERROR(EAGAIN)) return DataLoss("a frame does not decode: " + ErrorText(rc));
      if (draining) return NotFound("end of the video");
      rc = av_read_frame(format.get(), packet.get());
      if (rc == AVERROR_EOF) {
        draining = true;
        avcodec_send_packet(codec.get(), nullptr);
        continue;
      }
      if (rc < 0) return DataLoss("cannot read the file: " + ErrorText(rc));
      if (packet->stream_index == stream_index) {
        rc = avcodec_send_packet(codec.get(), packet.get());
        if (rc < 0 && rc != AVERROR(EAGAIN)) {
          av_packet_unref(packet.get());
          return DataLoss("a packet does not decode: " + ErrorText(rc));
        }
      }
      av_packet_unref(packet.get());
    }
  }

  Result<Image> ToImage() {
    const AVFrame& f = *frame;
    if (f.width != width || f.height != height) {
      return DataLoss("a frame is " + std::to_string(f.width) + "x" + std::to_string(f.height) +
                      ", the video is " + std::to_string(width) + "x" + std::to_string(height));
    }
    sws = sws_getCachedContext(sws, f.width, f.height, static_cast<AVPixelFormat>(f.format),
                               f.width, f.height, AV_PIX_FMT_BGR24, SWS_BICUBIC | SWS_ACCURATE_RND,
                               nullptr, nullptr, nullptr);
    if (!sws) return Internal("cannot set up the YUV to BGR conversion");
    Image image{f.width, f.height,
                std::vector<uint8_t>(static_cast<size_t>(f.width) * f.height * 3)};
    uint8_t* dst[1] = {image.bgr.data()};
    const int stride[1] = {f.width * 3};
    sws_scale(sws, f.data, f.linesize, 0, f.height, dst, stride);
    return image;
  }
};

namespace {

Result<InputFormatPtr> OpenInput(const std::string& path) {
  AVFormatContext* raw = nullptr;
  int rc = avformat_open_input(&raw, path.c_str(), nullptr, nullptr);
  if (rc < 0) return DataLoss("video '" + path + "' cannot be read: " + ErrorText(rc));
  InputFormatPtr format(raw);
  if ((rc = avformat_find_stream_info(format.get(), nullptr)) < 0) {
    return DataLoss("video '" + path + "' is damaged: " + ErrorText(rc));
  }
  return format;
}

}  // namespace

VideoReader::VideoReader(std::unique_ptr<State> state) : state_(std::move(state)) {}
VideoReader::~VideoReader() = default;

Result<std::unique_ptr<VideoReader>> VideoReader::Open(const std::string& path) {
  QuietLogs();
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return NotFound("video '" + path + "' does not exist");
  }
  auto s = std::make_unique<State>();
  s->path = path;
  LIPSYNC_ASSIGN_OR_RETURN(s->format, OpenInput(path));
  const AVCodec* decoder = nullptr;
  s->stream_index = av_find_best_stream(s->format.get(), AVMEDIA_TYPE_VIDEO, -1, -1, &decoder, 0);
  if (s->stream_index == AVERROR_STREAM_NOT_FOUND) {
    return InvalidArgument("file '" + path + "' has no video stream");
  }
  if (s->stream_index < 0 || !decoder) {
    return Unimplemented("video '" + path + "': no decoder for its video stream");
  }
  AVStream* stream = s->format->streams[s->stream_index];
  s->width = stream->codecpar->width;
  s->height = stream->codecpar->height;
  AVRational rate = stream->avg_frame_rate.num ? stream->avg_frame_rate : stream->r_frame_rate;
  s->fps = rate.den ? av_q2d(rate) : 0.0;

  // The scan: every packet's timestamp and key flag, without decoding.
  s->packet.reset(av_packet_alloc());
  s->frame.reset(av_frame_alloc());
  if (!s->packet || !s->frame) return ResourceExhausted("out of memory");
  int rc;
  while ((rc = av_read_frame(s->format.get(), s->packet.get())) >= 0) {
    if (s->packet->stream_index == s->stream_index) {
      const int64_t t = s->packet->pts != AV_NOPTS_VALUE ? s->packet->pts : s->packet->dts;
      if (t == AV_NOPTS_VALUE) {
        av_packet_unref(s->packet.get());
        return Unimplemented("video '" + path + "' has frames without timestamps");
      }
      s->pts.push_back(t);
      if (s->packet->flags & AV_PKT_FLAG_KEY) s->key_pts.push_back(t);
    }
    av_packet_unref(s->packet.get());
  }
  if (rc != AVERROR_EOF) return DataLoss("video '" + path + "' is damaged: " + ErrorText(rc));
  if (s->pts.empty()) return InvalidArgument("video '" + path + "' has no frames");
  std::sort(s->pts.begin(), s->pts.end());
  std::sort(s->key_pts.begin(), s->key_pts.end());

  // A fresh demuxer for decoding (rewinding some containers is less reliable than reopening).
  LIPSYNC_ASSIGN_OR_RETURN(s->format, OpenInput(path));
  if (s->stream_index >= static_cast<int>(s->format->nb_streams)) {
    return DataLoss("video '" + path + "' changed while it was read");
  }
  stream = s->format->streams[s->stream_index];
  s->codec.reset(avcodec_alloc_context3(decoder));
  if (!s->codec) return ResourceExhausted("out of memory");
  if ((rc = avcodec_parameters_to_context(s->codec.get(), stream->codecpar)) < 0 ||
      (rc = avcodec_open2(s->codec.get(), decoder, nullptr)) < 0) {
    return DataLoss("video '" + path + "': cannot open the " + decoder->name +
                    " decoder: " + ErrorText(rc));
  }
  s->codec->thread_count = 1;  // the caller decodes on a thread of its own
  return std::unique_ptr<VideoReader>(new VideoReader(std::move(s)));
}

int VideoReader::width() const { return state_->width; }
int VideoReader::height() const { return state_->height; }
double VideoReader::fps() const { return state_->fps; }
int64_t VideoReader::frame_count() const { return static_cast<int64_t>(state_->pts.size()); }

Result<Image> VideoReader::ReadFrame(int64_t index) {
  State& s = *state_;
  const std::string where = "video '" + s.path + "' frame " + std::to_string(index);
  if (index < 0 || index >= frame_count()) {
    return InvalidArgument(where + ": out of range (the video has " +
                           std::to_string(frame_count()) + " frames)");
  }
  if (index != s.next_index) LIPSYNC_RETURN_IF_ERROR(s.SeekBefore(index).WithContext(where));
  while (true) {
    Status st = s.DecodeNext();
    if (st.code() == StatusCode::kNotFound) {
      return DataLoss(where + ": the video ends before it (fewer decodable frames than packets)");
    }
    if (!st.ok()) return st.WithContext(where);
    const int64_t got =
        s.IndexOf(s.frame->best_effort_timestamp != AV_NOPTS_VALUE ? s.frame->best_effort_timestamp
                                                                   : s.frame->pts);
    s.next_index = got + 1;
    if (got < index) {
      av_frame_unref(s.frame.get());
      continue;
    }
    if (got > index) return DataLoss(where + ": it does not decode (the decoder skipped it)");
    auto image = s.ToImage();
    av_frame_unref(s.frame.get());
    if (!image.ok()) return image.status().WithContext(where);
    return image;
  }
}

}  // namespace lipsync
