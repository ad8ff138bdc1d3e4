// `lipsync compare-servers`: the same monolithic InferBatchComposite requests to two servers (the
// old one and lipsync), their JPEG frames decoded and compared pixel by pixel, and each server's
// latency side by side. Exits non-zero when a call fails on either side, the frames do not match
// in count or size, or a frame differs by more than the tolerance.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <random>

#include "alignment_probe.h"
#include "bench_stats.h"
#include "commands.h"
#include "engine_flags.h"
#include "grpc_client.h"
#include "lipsync/face.h"
#include "monolithic/monolithic.grpc.pb.h"

namespace lipsync::cli {
namespace {

struct CompareArgs {
  std::string old_target;
  std::string new_target;
  std::string model = "sanders";
  int batch = 4;
  int requests = 5;
  int size = 320;
  int start_frame = 0;
  uint64_t seed = 0;
  double tolerance = 2.0;
  double max_abs_tolerance = 255.0;
  int timeout_ms = 120000;
  bool json = false;
  bool alignment_probe = true;
};

struct FrameDiff {
  int request = 0, frame = 0;
  double max_abs = 0, mean_abs = 0;
  double psnr = std::numeric_limits<double>::infinity();  // identical frames
};

// Seeded inputs of the monolithic contract: faces in [0, 1) and speech-like audio (a few
// syllable-rate tones under noise) of (batch + 15) x 640 samples.
monolithic::CompositeBatchRequest MakeRequest(const CompareArgs& a, int index) {
  std::mt19937_64 rng(a.seed * 1000003 + static_cast<uint64_t>(index));
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  std::normal_distribution<float> noise(0.0f, 0.05f);
  const size_t visual = static_cast<size_t>(a.batch) * 6 * a.size * a.size;
  std::vector<float> v(visual);
  for (float& x : v) x = unit(rng);
  const size_t samples = static_cast<size_t>(a.batch + 15) * 640;
  std::vector<float> pcm(samples);
  const double f0 = 120.0 + 80.0 * unit(rng), rate = 3.0 + 3.0 * unit(rng);
  for (size_t i = 0; i < samples; ++i) {
    const double t = static_cast<double>(i) / 16000.0;
    const double envelope = std::max(0.0, std::sin(2 * M_PI * rate * t));
    pcm[i] = static_cast<float>(0.3 * envelope * std::sin(2 * M_PI * f0 * t)) + noise(rng);
  }
  monolithic::CompositeBatchRequest r;
  r.set_model_id(a.model);
  r.set_visual_frames(v.data(), v.size() * sizeof(float));
  r.set_raw_audio(pcm.data(), pcm.size() * sizeof(float));
  r.set_batch_size(a.batch);
  r.set_start_frame_idx(a.start_frame + index * a.batch);
  r.set_sample_rate(16000);
  return r;
}

Result<monolithic::CompositeBatchResponse> Call(monolithic::MonolithicService::Stub& stub,
                                                const monolithic::CompositeBatchRequest& request,
                                                const std::string& who, int timeout_ms,
                                                double* ms) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms));
  monolithic::CompositeBatchResponse response;
  const auto start = std::chrono::steady_clock::now();
  grpc::Status status = stub.InferBatchComposite(&context, request, &response);
  *ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  if (!status.ok()) {
    return Unavailable(who + " server: " + status.error_message() + " (gRPC code " +
                       std::to_string(static_cast<int>(status.error_code())) + ")");
  }
  if (!response.success()) return Internal(who + " server answered an error: " + response.error());
  if (response.composited_frames_size() != request.batch_size()) {
    return Internal(who + " server returned " + std::to_string(response.composited_frames_size()) +
                    " frames for a batch of " + std::to_string(request.batch_size()));
  }
  return response;
}

Result<cv::Mat> Decode(const std::string& jpeg, const std::string& what) {
  LIPSYNC_ASSIGN_OR_RETURN(Image image, DecodeImage(jpeg, what));
  return cv::Mat(image.height, image.width, CV_8UC3, image.bgr.data()).clone();
}

// Per-pixel, per-channel differences of two 8-bit images of one size; PSNR with peak 255.
FrameDiff Difference(const cv::Mat& a, const cv::Mat& b) {
  cv::Mat diff;
  cv::absdiff(a, b, diff);
  FrameDiff d;
  double lo = 0, hi = 0;
  cv::minMaxLoc(diff.reshape(1), &lo, &hi);
  d.max_abs = hi;
  const cv::Scalar sum = cv::sum(diff);
  const double values = static_cast<double>(diff.total()) * diff.channels();
  d.mean_abs = (sum[0] + sum[1] + sum[2]) / values;
  cv::Mat squared;
  diff.convertTo(squared, CV_64F);
  const cv::Scalar sq = cv::sum(squared.mul(squared));
  const double mse = (sq[0] + sq[1] + sq[2]) / values;
  if (mse > 0) d.psnr = 10.0 * std::log10(255.0 * 255.0 / mse);
  return d;
}

nlohmann::json PsnrJson(double psnr) {
  return std::isinf(psnr) ? nlohmann::json(nullptr) : nlohmann::json(psnr);
}

std::string PsnrText(double psnr) {
  char buf[32];
  if (std::isinf(psnr)) return "inf";
  std::snprintf(buf, sizeof(buf), "%.2f", psnr);
  return buf;
}

// One line on the probe's finding, saying which server is late.
std::string AlignmentText(const AlignmentResult& r, const std::string& error) {
  if (!error.empty()) return "not measured: " + error;
  if (!r.measured) {
    return "not measurable: the frames of one server do not change with the audio";
  }
  if (r.offset_frames == 0) return "both servers show a sound at the same frame";
  const int n = std::abs(r.offset_frames);
  std::string text = std::string(r.offset_frames > 0 ? "the old" : "the new") +
                     " server shows a sound " + std::to_string(n) + " frames (" +
                     std::to_string(n * 40) + " ms) later than the " +
                     (r.offset_frames > 0 ? "new" : "old") + " one";
  if (r.offset_frames == 8) {
    text +=
        "; the Go server's frame i shows the audio of its chunk's frame i, and its clients' chunks "
        "start 8 frames early, so its frames lag the audio by 320 ms after a recording's first 8 "
        "frames (lipsync serve --monolithic-align go reproduces that)";
  }
  return text;
}

int RunCompare(const CompareArgs& a) {
  if (a.old_target.empty() || a.new_target.empty()) {
    return ReportError(InvalidArgument("give both --old HOST:PORT and --new HOST:PORT"));
  }
  if (a.batch < 1 || a.batch > 32 || a.requests < 1 || (a.size != 320 && a.size != 160)) {
    return ReportError(
        InvalidArgument("--batch must be 1..32, --requests at least 1, --size 320 or 160"));
  }
  auto old_channel = MakeChannel(a.old_target, "");
  if (!old_channel.ok()) return ReportError(old_channel.status());
  auto new_channel = MakeChannel(a.new_target, "");
  if (!new_channel.ok()) return ReportError(new_channel.status());
  auto old_stub = monolithic::MonolithicService::NewStub(*old_channel);
  auto new_stub = monolithic::MonolithicService::NewStub(*new_channel);

  std::vector<FrameDiff> frames;
  std::vector<double> old_ms, new_ms;
  std::string failure;
  // Request -1 warms both servers (loads the avatar) and is compared but not timed.
  for (int i = -1; i < a.requests && failure.empty(); ++i) {
    const auto request = MakeRequest(a, i + 1);
    double t_old = 0, t_new = 0;
    // Alternate which server goes first so neither always meets a warmer cache.
    Result<monolithic::CompositeBatchResponse> r_old = Internal("not called"),
                                               r_new = Internal("not called");
    if (i % 2 == 0) {
      r_old = Call(*old_stub, request, "old", a.timeout_ms, &t_old);
      r_new = Call(*new_stub, request, "new", a.timeout_ms, &t_new);
    } else {
      r_new = Call(*new_stub, request, "new", a.timeout_ms, &t_new);
      r_old = Call(*old_stub, request, "old", a.timeout_ms, &t_old);
    }
    if (!r_old.ok() || !r_new.ok()) {
      failure = !r_old.ok() ? r_old.status().message() : r_new.status().message();
      if (!r_old.ok() && !r_new.ok()) failure += "; " + r_new.status().message();
      break;
    }
    if (i >= 0) {
      old_ms.push_back(t_old);
      new_ms.push_back(t_new);
    }
    for (int f = 0; f < a.batch; ++f) {
      const std::string where =
          "request " + std::to_string(i + 1) + " frame " + std::to_string(f) + " from the ";
      auto img_old = Decode(r_old->composited_frames(f), where + "old server");
      auto img_new = Decode(r_new->composited_frames(f), where + "new server");
      if (!img_old.ok() || !img_new.ok()) {
        failure = (!img_old.ok() ? img_old.status() : img_new.status()).message();
        break;
      }
      if (img_old->size() != img_new->size()) {
        failure = where + "servers differ in size: " + std::to_string(img_old->cols) + "x" +
                  std::to_string(img_old->rows) + " vs " + std::to_string(img_new->cols) + "x" +
                  std::to_string(img_new->rows);
        break;
      }
      FrameDiff d = Difference(*img_old, *img_new);
      d.request = i + 1;
      d.frame = f;
      frames.push_back(d);
    }
  }

  // Which frame each server shows a sound at (reported; it does not decide the exit status).
  AlignmentResult alignment;
  std::string probe_error;
  std::vector<double> old_profile, new_profile;
  if (a.alignment_probe && failure.empty()) {
    ProbeOptions probe{a.model, a.size, a.start_frame + 8, a.timeout_ms, a.seed};
    auto p_old = ProbeAlignment(*old_stub, probe, "old");
    auto p_new = p_old.ok() ? ProbeAlignment(*new_stub, probe, "new") : p_old;
    if (p_old.ok() && p_new.ok()) {
      old_profile = p_old->profile;
      new_profile = p_new->profile;
      alignment = CompareProfiles(old_profile, new_profile);
    } else {
      probe_error = (!p_old.ok() ? p_old.status() : p_new.status()).message();
    }
  }
  const std::string alignment_text = AlignmentText(alignment, probe_error);

  FrameDiff worst;
  worst.psnr = std::numeric_limits<double>::infinity();
  double mean_sum = 0;
  int over = 0;
  for (const auto& d : frames) {
    worst.max_abs = std::max(worst.max_abs, d.max_abs);
    worst.mean_abs = std::max(worst.mean_abs, d.mean_abs);
    worst.psnr = std::min(worst.psnr, d.psnr);
    mean_sum += d.mean_abs;
    if (d.mean_abs > a.tolerance || d.max_abs > a.max_abs_tolerance) ++over;
  }
  const bool ok = failure.empty() && over == 0;
  const LatencySummary lat_old = Summarize(old_ms), lat_new = Summarize(new_ms);

  if (a.json) {
    nlohmann::json per_frame = nlohmann::json::array();
    for (const auto& d : frames) {
      per_frame.push_back({{"request", d.request},
                           {"frame", d.frame},
                           {"max_abs", d.max_abs},
                           {"mean_abs", d.mean_abs},
                           {"psnr_db", PsnrJson(d.psnr)}});
    }
    nlohmann::json j = {
        {"old", a.old_target},
        {"new", a.new_target},
        {"model", a.model},
        {"batch", a.batch},
        {"requests", a.requests},
        {"seed", a.seed},
        {"frames_compared", frames.size()},
        {"frames", per_frame},
        {"worst",
         {{"max_abs", worst.max_abs},
          {"mean_abs", worst.mean_abs},
          {"psnr_db", PsnrJson(worst.psnr)}}},
        {"mean_abs", frames.empty() ? 0.0 : mean_sum / frames.size()},
        {"tolerance", {{"mean_abs", a.tolerance}, {"max_abs", a.max_abs_tolerance}}},
        {"frames_over_tolerance", over},
        {"latency_ms", {{"old", ToJson(lat_old)}, {"new", ToJson(lat_new)}}},
        {"error", failure.empty() ? nlohmann::json(nullptr) : nlohmann::json(failure)},
        {"ok", ok}};
    if (a.alignment_probe) {
      j["alignment"] = {
          {"measured", alignment.measured},
          {"offset_frames", alignment.offset_frames},
          {"offset_ms", alignment.offset_frames * 40},
          {"correlation", alignment.correlation},
          {"old_profile", old_profile},
          {"new_profile", new_profile},
          {"error", probe_error.empty() ? nlohmann::json(nullptr) : nlohmann::json(probe_error)},
          {"summary", alignment_text}};
    }
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf(
        "compare-servers: old %s vs new %s, model %s, %d requests of %d frames (seed %llu)\n",
        a.old_target.c_str(), a.new_target.c_str(), a.model.c_str(), a.requests, a.batch,
        static_cast<unsigned long long>(a.seed));
    std::printf("(request 0 warms both servers up and is not timed)\n");
    std::printf("%8s %6s %8s %9s %9s\n", "request", "frame", "max_abs", "mean_abs", "psnr_db");
    for (const auto& d : frames) {
      std::printf("%8d %6d %8.0f %9.4f %9s\n", d.request, d.frame, d.max_abs, d.mean_abs,
                  PsnrText(d.psnr).c_str());
    }
    std::printf(
        "frames compared: %zu; worst max abs %.0f, worst mean abs %.4f, mean abs %.4f, "
        "lowest PSNR %s dB\n",
        frames.size(), worst.max_abs, worst.mean_abs,
        frames.empty() ? 0.0 : mean_sum / frames.size(), PsnrText(worst.psnr).c_str());
    std::printf("latency ms     p50      p99     mean  (%zu timed requests each)\n", old_ms.size());
    std::printf("old       %8.2f %8.2f %8.2f\n", lat_old.median, lat_old.p99, lat_old.mean);
    std::printf("new       %8.2f %8.2f %8.2f\n", lat_new.median, lat_new.p99, lat_new.mean);
    if (a.alignment_probe) std::printf("audio alignment: %s\n", alignment_text.c_str());
    if (!failure.empty()) std::printf("FAILED: %s\n", failure.c_str());
    if (over > 0) {
      std::printf("FAILED: %d frames differ beyond the tolerance (mean abs %.4g, max abs %.4g)\n",
                  over, a.tolerance, a.max_abs_tolerance);
    }
    if (ok)
      std::printf("OK: within tolerance (mean abs %.4g, max abs %.4g)\n", a.tolerance,
                  a.max_abs_tolerance);
  }
  return ok ? 0 : 1;
}

}  // namespace

void AddCompareServersCommand(CLI::App& app, int* exit_code) {
  auto* cmd = app.add_subcommand(
      "compare-servers",
      "Send the same monolithic InferBatchComposite requests to two servers and compare their "
      "frames and latency");
  auto a = std::make_shared<CompareArgs>();
  cmd->add_option("--old", a->old_target, "the old server, HOST:PORT")->required();
  cmd->add_option("--new", a->new_target, "the new server (lipsync), HOST:PORT")->required();
  cmd->add_option("--model", a->model, "model_id (avatar) to ask both for")->capture_default_str();
  cmd->add_option("--batch", a->batch, "frames per request (1..32)")->capture_default_str();
  cmd->add_option("--requests", a->requests, "timed requests (after one warm-up request)")
      ->capture_default_str();
  cmd->add_option("--size", a->size, "the avatar's model input size (320 or 160)")
      ->capture_default_str();
  cmd->add_option("--start-frame", a->start_frame, "start_frame_idx of the first request")
      ->capture_default_str();
  cmd->add_option("--seed", a->seed, "seed of the random inputs")->capture_default_str();
  cmd->add_option("--tolerance", a->tolerance,
                  "largest mean absolute difference of a frame, in 8-bit levels")
      ->capture_default_str();
  cmd->add_option("--max-abs-tolerance", a->max_abs_tolerance,
                  "largest absolute difference of any pixel value")
      ->capture_default_str();
  cmd->add_option("--timeout-ms", a->timeout_ms, "deadline of each call")->capture_default_str();
  cmd->add_flag("--json", a->json, "print the report as JSON");
  cmd->add_flag("!--no-alignment-probe", a->alignment_probe,
                "skip the audio alignment probe (two extra requests of 32 frames per server, "
                "for output frames --start-frame + 8 onwards)");
  cmd->callback([=] { *exit_code = RunCompare(*a); });
}

}  // namespace lipsync::cli
