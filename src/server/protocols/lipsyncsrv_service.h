// lipsyncsrv.LipSyncService: the Python lip-sync server's contract (proto/lipsyncsrv), so its
// clients can call lipsync unchanged. A request names an avatar and a frame id; the answer is the
// predicted 320x320 face as a JPEG and the rectangle the client pastes it into. The audio comes
// from an audio_override (base64 PCM as the Python server's JavaScript clients send, or a file in
// the avatar's folder), or else from the avatar's precomputed features (a row per video frame) or
// its own audio. Errors are answered as success=false with gRPC status OK, as that server does.
// Requests run on the service's own threads, LoadModel (a package import) and the load of a
// request's avatar on the avatar repository's loader thread; none on gRPC's.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "lipsyncsrv/lipsyncsrv.grpc.pb.h"
#include "server/core/avatar_registry.h"
#include "server/core/avatar_requests.h"
#include "server/core/metrics.h"
#include "server/core/worker_pool.h"
#include "server/protocols/call_gate.h"
#include "server/protocols/old_behaviour.h"

namespace lipsync::server {

constexpr int kLipSyncSrvJpegQuality = 95;
// Frames of one batch call at most: the faces take 1.2 MB each while the batch runs.
constexpr int kLipSyncSrvMaxFrames = 256;

struct LipSyncSrvOptions {
  int worker_threads = 2;  // requests run on these, in arrival order
  // LoadModel with a package_path imports the package into <avatar root>/<model_name>; the avatar
  // gets this audio encoder (the package has none) and its UNet is exported from the package's
  // checkpoint by `export_checkpoint` with `export_options`. Without an exporter such a LoadModel
  // fails (FailedPrecondition) and the server goes on.
  std::string audio_encoder;
  CheckpointExporter export_checkpoint;
  CheckpointExportOptions export_options;
  ZipLimits package_limits;  // a zip package unpacks within these
  // Imports a package instead of ImportLipSyncSrvPackage with the options above (tests hold an
  // import in progress with it); empty: that import.
  std::function<Result<Avatar>(const std::string& package, const AvatarImportOptions& import)>
      import_package;
  // A frame's audio window: lipsync's (16 feature rows around the frame) or the Python server's
  // (lipsyncsrv_audio.h).
  Behaviour window = Behaviour::kLipsync;
};

// `name` (an audio_override) as a file inside the avatar folder `dir`: relative names are taken
// from the folder; anything that resolves outside it (.., absolute paths, symbolic links) is
// InvalidArgument, a missing file NotFound.
Result<std::string> ResolveAudioOverride(const std::string& dir, const std::string& name);

class LipSyncSrvService final : public lipsyncsrv::LipSyncService::CallbackService {
 public:
  // `registry` serves the avatars under `avatar_root` and outlives the service; `gate` refuses
  // new calls while the server drains.
  LipSyncSrvService(AvatarRegistry* registry, std::string avatar_root, LipSyncSrvOptions options,
                    Metrics* metrics, const CallGate* gate);
  ~LipSyncSrvService() override;  // finishes queued work, then joins the workers

  grpc::ServerUnaryReactor* GenerateInference(grpc::CallbackServerContext* call,
                                              const lipsyncsrv::InferenceRequest* request,
                                              lipsyncsrv::InferenceResponse* response) override;
  grpc::ServerUnaryReactor* GenerateBatchInference(
      grpc::CallbackServerContext* call, const lipsyncsrv::BatchInferenceRequest* request,
      lipsyncsrv::BatchInferenceResponse* response) override;
  grpc::ServerBidiReactor<lipsyncsrv::InferenceRequest, lipsyncsrv::InferenceResponse>*
  StreamInference(grpc::CallbackServerContext* call) override;
  grpc::ServerUnaryReactor* LoadModel(grpc::CallbackServerContext* call,
                                      const lipsyncsrv::LoadModelRequest* request,
                                      lipsyncsrv::LoadModelResponse* response) override;

  // What a call for `frames` frames of `model` is checked for before its avatar: the avatar it
  // names (none for no frames), or its failure.
  static Result<AvatarRequests::Named> NameFrames(const std::string& model, size_t frames);
  // The frames of one model as one engine batch on its avatar (or failed with why there is
  // none); one response per frame id, in order, timed from `start`. Runs on the calling thread;
  // the frames do not run once the lease's deadline has passed. Returns the first failure
  // answered (OK when every frame succeeded), for the metrics.
  Status RunFrames(std::chrono::steady_clock::time_point start, const Result<AvatarLease>& avatar,
                   const std::string& model, const std::vector<int32_t>& frame_ids,
                   const std::optional<std::string>& audio_override,
                   std::vector<lipsyncsrv::InferenceResponse>* responses);
  // Runs on the avatar repository's loader thread (one import or load at a time).
  Status RunLoadModel(const lipsyncsrv::LoadModelRequest& request,
                      lipsyncsrv::LoadModelResponse* response);

 private:
  class StreamReactor;
  // The audio feature sequence [rows, 512] for `avatar`: its override file when one is named,
  // else its precomputed features, else those of its frames video's sound; cached per avatar
  // load and file.
  Result<std::shared_ptr<const Tensor>> FeatureSequence(const std::shared_ptr<LoadedAvatar>& avatar,
                                                        const std::string& audio_override);
  // The audio windows [frames, 32, 16, 16] of `frames` under `audio_override` (empty: none).
  Result<Tensor> AudioWindows(const std::shared_ptr<LoadedAvatar>& avatar,
                              const std::string& audio_override,
                              const std::vector<int64_t>& frames);
  // A base64 PCM override's window [1, 32, 16, 16]; cached per avatar load and text.
  Result<std::shared_ptr<const Tensor>> PcmWindow(const std::shared_ptr<LoadedAvatar>& avatar,
                                                  const std::string& audio_override);

  AvatarRegistry* registry_;
  std::string root_;
  LipSyncSrvOptions options_;
  Metrics* metrics_;
  const CallGate* gate_;

  struct CachedSequence {
    std::weak_ptr<LoadedAvatar> owner;
    std::shared_ptr<const Tensor> rows;
  };
  std::mutex cache_mu_;  // guards sequences_ and default_overrides_
  std::map<std::string, CachedSequence> sequences_;
  std::map<std::string, std::string> default_overrides_;  // set by LoadModel's audio_override
  AvatarRequests requests_;  // last: its threads stop before the rest goes
};

}  // namespace lipsync::server
