// Small helpers shared by the FFmpeg-based readers and writers: error text, owning pointers.
#pragma once

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/error.h>
#include <libavutil/frame.h>
#include <libswresample/swresample.h>
#include <libswscale/swscale.h>
}

#include <memory>
#include <string>

#include "lipsync/status.h"

namespace lipsync::ffmpeg {

inline std::string ErrorText(int err) {
  char buf[AV_ERROR_MAX_STRING_SIZE] = {};
  av_strerror(err, buf, sizeof(buf));
  return buf;
}

struct FormatInputCloser {
  void operator()(AVFormatContext* p) const { avformat_close_input(&p); }
};
struct CodecContextFreer {
  void operator()(AVCodecContext* p) const { avcodec_free_context(&p); }
};
struct FrameFreer {
  void operator()(AVFrame* p) const { av_frame_free(&p); }
};
struct PacketFreer {
  void operator()(AVPacket* p) const { av_packet_free(&p); }
};
struct SwsFreer {
  void operator()(SwsContext* p) const { sws_freeContext(p); }
};
struct SwrFreer {
  void operator()(SwrContext* p) const { swr_free(&p); }
};

using InputFormatPtr = std::unique_ptr<AVFormatContext, FormatInputCloser>;
using CodecContextPtr = std::unique_ptr<AVCodecContext, CodecContextFreer>;
using FramePtr = std::unique_ptr<AVFrame, FrameFreer>;
using PacketPtr = std::unique_ptr<AVPacket, PacketFreer>;
using SwsPtr = std::unique_ptr<SwsContext, SwsFreer>;
using SwrPtr = std::unique_ptr<SwrContext, SwrFreer>;

// Keeps FFmpeg's own log off: lipsync reports failures through Status, and FFmpeg's lines on
// stderr would repeat them beside a program's (or a server's) own log.
inline void QuietLogs() { av_log_set_level(AV_LOG_QUIET); }

// A resampler from (layout, format, rate) to mono float at `to_rate`, downmixing by the mean of
// the channels (librosa's to_mono), with the SoX resampler when this FFmpeg has it.
Result<SwrPtr> MakeMonoResampler(const AVChannelLayout& in_layout, AVSampleFormat in_format,
                                 int in_rate, int to_rate);

}  // namespace lipsync::ffmpeg
