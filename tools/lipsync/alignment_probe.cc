#include "alignment_probe.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cmath>
#include <opencv2/core.hpp>
#include <random>

#include "lipsync/face.h"

namespace lipsync::cli {
namespace {

constexpr int kSamplesPerFrame = 640;
constexpr int kMaxShift = 16;

monolithic::CompositeBatchRequest ProbeRequest(const ProbeOptions& o, bool tone) {
  std::mt19937_64 rng(o.seed + 77);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  std::vector<float> visual(static_cast<size_t>(kProbeBatch) * 6 * o.size * o.size);
  for (float& v : visual) v = unit(rng);
  // The clients' chunk: (batch + 15) frames from 8 before the first output frame, so output
  // frame f is the chunk's frame f + 8.
  std::vector<float> pcm(static_cast<size_t>(kProbeBatch + 15) * kSamplesPerFrame, 0.0f);
  if (tone) {
    const size_t first = static_cast<size_t>(kProbeToneFrame + 8) * kSamplesPerFrame;
    for (size_t i = 0; i < kSamplesPerFrame; ++i) {
      pcm[first + i] = 0.5f * static_cast<float>(std::sin(2 * M_PI * 440.0 * i / 16000.0));
    }
  }
  monolithic::CompositeBatchRequest r;
  r.set_model_id(o.model);
  r.set_visual_frames(visual.data(), visual.size() * sizeof(float));
  r.set_raw_audio(pcm.data(), pcm.size() * sizeof(float));
  r.set_batch_size(kProbeBatch);
  r.set_start_frame_idx(o.start_frame);
  return r;
}

Result<std::vector<cv::Mat>> Frames(monolithic::MonolithicService::Stub& stub,
                                    const monolithic::CompositeBatchRequest& request,
                                    const ProbeOptions& o, const std::string& who) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(o.timeout_ms));
  monolithic::CompositeBatchResponse response;
  grpc::Status status = stub.InferBatchComposite(&context, request, &response);
  if (!status.ok())
    return Unavailable(who + " server (alignment probe): " + status.error_message());
  if (!response.success()) {
    return Internal(who +
                    " server answered the alignment probe with an error: " + response.error());
  }
  if (response.composited_frames_size() != kProbeBatch) {
    return Internal(who + " server returned " + std::to_string(response.composited_frames_size()) +
                    " frames for the alignment probe's " + std::to_string(kProbeBatch));
  }
  std::vector<cv::Mat> frames;
  for (const std::string& jpeg : response.composited_frames()) {
    LIPSYNC_ASSIGN_OR_RETURN(Image image, DecodeImage(jpeg, who + " server's probe frame"));
    frames.push_back(cv::Mat(image.height, image.width, CV_8UC3, image.bgr.data()).clone());
  }
  return frames;
}

}  // namespace

Result<ServerProbe> ProbeAlignment(monolithic::MonolithicService::Stub& stub,
                                   const ProbeOptions& options, const std::string& who) {
  LIPSYNC_ASSIGN_OR_RETURN(auto silent, Frames(stub, ProbeRequest(options, false), options, who));
  LIPSYNC_ASSIGN_OR_RETURN(auto tone, Frames(stub, ProbeRequest(options, true), options, who));
  ServerProbe probe;
  for (int f = 0; f < kProbeBatch; ++f) {
    if (silent[f].size() != tone[f].size()) {
      return Internal(who + " server's probe frames change size");
    }
    cv::Mat diff;
    cv::absdiff(silent[f], tone[f], diff);
    const cv::Scalar sum = cv::sum(diff);
    probe.profile.push_back((sum[0] + sum[1] + sum[2]) / (diff.total() * diff.channels()));
  }
  return probe;
}

AlignmentResult CompareProfiles(const std::vector<double>& old_profile,
                                const std::vector<double>& new_profile) {
  AlignmentResult result;
  const int n = static_cast<int>(std::min(old_profile.size(), new_profile.size()));
  double a2 = 0, b2 = 0;
  for (int i = 0; i < n; ++i) {
    a2 += old_profile[static_cast<size_t>(i)] * old_profile[static_cast<size_t>(i)];
    b2 += new_profile[static_cast<size_t>(i)] * new_profile[static_cast<size_t>(i)];
  }
  if (a2 <= 0 || b2 <= 0) return result;  // a server whose frames ignore the audio
  // Normalised by the whole profiles, so that a shift which pushes part of either out of the
  // batch scores lower than one that lines them up completely.
  double best = -1;
  for (int k = -kMaxShift; k <= kMaxShift; ++k) {
    double dot = 0;
    for (int i = std::max(0, -k); i < n && i + k < n; ++i) {
      dot += old_profile[static_cast<size_t>(i + k)] * new_profile[static_cast<size_t>(i)];
    }
    const double c = dot / std::sqrt(a2 * b2);
    if (c > best) {
      best = c;
      result.offset_frames = k;
    }
  }
  result.correlation = best;
  result.measured = best > 0.5;
  return result;
}

}  // namespace lipsync::cli
