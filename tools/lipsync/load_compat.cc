// Requests of the two compatibility services, built as the users' clients build them (facts from
// their repository, cvoalex/webcodectest):
// - monolithic InferBatchComposite (go-monolithic-server/testing/test_batch_*.go): model_id,
//   visual_frames (batch x 6 x 320 x 320 float32), raw_audio ((batch + 15) x 40 ms of 16 kHz float
//   PCM from 8 frames before the first output frame), batch_size, start_frame_idx; sample_rate is
//   never set. Each client walks through the avatar's frames, batch after batch.
// - lipsyncsrv GenerateBatchInference (old/old_realtime_lipsync/direct_grpc_client.js): model_name,
//   frame_ids, audio_override as base64 of 16-bit PCM (640 ms at 24 kHz).
#include <absl/strings/escaping.h>

#include <chrono>
#include <cmath>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "lipsyncsrv/lipsyncsrv.grpc.pb.h"
#include "load_sessions.h"
#include "monolithic/monolithic.grpc.pb.h"

namespace lipsync::cli {
namespace {

constexpr int kFace = 320;

// Speech-like PCM: a voiced tone under a syllable-rate envelope, plus a little noise.
std::vector<float> SpeechLike(size_t samples, int rate, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> noise(0.0f, 0.02f);
  std::vector<float> pcm(samples);
  for (size_t i = 0; i < samples; ++i) {
    const double t = static_cast<double>(i) / rate;
    const double envelope = std::max(0.0, std::sin(2 * M_PI * 4.0 * t));
    pcm[i] = static_cast<float>(0.3 * envelope * std::sin(2 * M_PI * 140.0 * t)) + noise(rng);
  }
  return pcm;
}

// The first frame of a client's call: clients start apart and move one batch per call, every
// frame of the batch inside the avatar's `frames` (the old servers refuse frames beyond the end).
int64_t Start(int client, int64_t index, int batch, int frames) {
  const int64_t starts = std::max<int64_t>(1, frames - batch + 1);
  return (static_cast<int64_t>(client) * 7 * batch + index * batch) % starts;
}

std::chrono::system_clock::time_point Deadline(int timeout_ms) {
  return std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms);
}

class MonolithicTarget : public CompatTarget {
 public:
  MonolithicTarget(const std::shared_ptr<grpc::Channel>& channel, const std::string& model,
                   int batch, int frames, int timeout_ms)
      : stub_(monolithic::MonolithicService::NewStub(channel)),
        frames_(frames),
        timeout_ms_(timeout_ms) {
    std::mt19937_64 rng(7);
    std::uniform_real_distribution<float> unit(0.0f, 1.0f);
    std::vector<float> visual(static_cast<size_t>(batch) * 6 * kFace * kFace);
    for (float& x : visual) x = unit(rng);
    const auto pcm = SpeechLike(static_cast<size_t>(batch + 15) * 640, 16000, 11);
    request_.set_model_id(model);
    request_.set_visual_frames(visual.data(), visual.size() * sizeof(float));
    request_.set_raw_audio(pcm.data(), pcm.size() * sizeof(float));
    request_.set_batch_size(batch);
  }

  CompatCall Call(int client, int64_t index) override {
    // Clients start apart in the avatar's frames and move one batch per call. Each calling thread
    // keeps its copy of the request (megabytes of faces), so that a call copies none of it.
    monolithic::CompositeBatchRequest& request = ThisThreadsRequest();
    request.set_start_frame_idx(
        static_cast<int32_t>(Start(client, index, request_.batch_size(), frames_)));
    grpc::ClientContext context;
    context.set_deadline(Deadline(timeout_ms_));
    monolithic::CompositeBatchResponse response;
    const grpc::Status status = stub_->InferBatchComposite(&context, request, &response);
    return {status.error_code(), status.ok() && response.success(),
            response.composited_frames_size(),
            status.ok() ? response.error() : status.error_message()};
  }

 private:
  monolithic::CompositeBatchRequest& ThisThreadsRequest() {
    std::lock_guard lock(mu_);
    auto [it, added] = per_thread_.try_emplace(std::this_thread::get_id());
    if (added) it->second = request_;
    return it->second;
  }

  std::unique_ptr<monolithic::MonolithicService::Stub> stub_;
  monolithic::CompositeBatchRequest request_;
  std::mutex mu_;
  // Nodes stay where they are as others are added.
  std::map<std::thread::id, monolithic::CompositeBatchRequest> per_thread_;
  int frames_;
  int timeout_ms_;
};

class LipsyncsrvTarget : public CompatTarget {
 public:
  LipsyncsrvTarget(const std::shared_ptr<grpc::Channel>& channel, const std::string& model,
                   int batch, int frames, int timeout_ms)
      : stub_(lipsyncsrv::LipSyncService::NewStub(channel)),
        batch_(batch),
        frames_(frames),
        timeout_ms_(timeout_ms) {
    const auto pcm = SpeechLike(24000 * 640 / 1000, 24000, 13);
    std::string bytes(pcm.size() * 2, '\0');
    for (size_t i = 0; i < pcm.size(); ++i) {
      const auto v = static_cast<int16_t>(std::lround(std::clamp(pcm[i], -1.0f, 1.0f) * 32767.0f));
      bytes[2 * i] = static_cast<char>(v & 0xff);
      bytes[2 * i + 1] = static_cast<char>((v >> 8) & 0xff);
    }
    request_.set_model_name(model);
    request_.set_audio_override(absl::Base64Escape(bytes));
  }

  CompatCall Call(int client, int64_t index) override {
    lipsyncsrv::BatchInferenceRequest request = request_;
    const int64_t first = Start(client, index, batch_, frames_);
    for (int i = 0; i < batch_; ++i) request.add_frame_ids(static_cast<int32_t>(first + i));
    grpc::ClientContext context;
    context.set_deadline(Deadline(timeout_ms_));
    lipsyncsrv::BatchInferenceResponse response;
    const grpc::Status status = stub_->GenerateBatchInference(&context, request, &response);
    bool success = status.ok() && response.responses_size() == batch_;
    std::string error = status.error_message();
    for (const auto& r : response.responses()) {
      success = success && r.success();
      if (!r.success() && error.empty()) error = r.error();
    }
    return {status.error_code(), success, response.responses_size(), error};
  }

 private:
  std::unique_ptr<lipsyncsrv::LipSyncService::Stub> stub_;
  lipsyncsrv::BatchInferenceRequest request_;
  int batch_;
  int frames_;
  int timeout_ms_;
};

}  // namespace

std::unique_ptr<CompatTarget> MakeMonolithicTarget(const std::shared_ptr<grpc::Channel>& channel,
                                                   const std::string& model, int batch, int frames,
                                                   int timeout_ms) {
  return std::make_unique<MonolithicTarget>(channel, model, batch, frames, timeout_ms);
}

std::unique_ptr<CompatTarget> MakeLipsyncsrvTarget(const std::shared_ptr<grpc::Channel>& channel,
                                                   const std::string& model, int batch, int frames,
                                                   int timeout_ms) {
  return std::make_unique<LipsyncsrvTarget>(channel, model, batch, frames, timeout_ms);
}

}  // namespace lipsync::cli
