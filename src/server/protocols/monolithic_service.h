// monolithic.MonolithicService: the Go "monolithic" server's contract (proto/monolithic), so its
// clients can call lipsync unchanged. A request names an avatar and carries the batch's prepared
// face crops and a chunk of raw audio; the answer is one JPEG per output frame, the avatar's
// background frame with the new face pasted in. Errors are answered as success=false with gRPC
// status OK, as that server does. Requests run on the service's own threads, LoadModel and the
// load of a request's avatar on the avatar repository's loader thread; none on gRPC's.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "monolithic/monolithic.grpc.pb.h"
#include "server/core/avatar_registry.h"
#include "server/core/avatar_requests.h"
#include "server/core/metrics.h"
#include "server/core/worker_pool.h"
#include "server/protocols/call_gate.h"
#include "server/protocols/composite_audio.h"

namespace lipsync::server {

constexpr int kCompositeMaxBatch = 32;
constexpr int kCompositeJpegQuality = 75;
constexpr int kMonolithicMessageBytes = 100 << 20;  // the Go server's message limit

// Checks what a request can be checked for without its avatar: batch size, sample rate and start
// index.
Status CheckCompositeRequest(const monolithic::CompositeBatchRequest& request);

// Where the service follows the Go server instead of lipsync (docs/API.md): which audio rows an
// output frame reads, and how the model's face goes into the crop rectangle.
struct CompositeBehaviour {
  Behaviour align = Behaviour::kLipsync;
  Behaviour paste = Behaviour::kLipsync;
};

// The Go server's paste: the face (s x s BGR bytes) stretched over the whole crop rectangle with
// that server's bilinear resize (source point dst x s / size, no half-pixel offset, truncated).
// lipsync's PasteFace puts it into the centre of the rectangle's 328 crop, as SyncTalk_2D does.
void PasteStretched(const uint8_t* face, int s, const CropRect& rect, Image& frame);

struct CompositeTimings {
  double audio_ms = 0, inference_ms = 0, composite_ms = 0;
};

// One request on a loaded avatar, before JPEG encoding: the full background frames with the new
// faces pasted, in output order. The request runs as a lip-sync stream given its inputs (the
// client's faces, its chunk's windows) on the avatar's scheduler, as one batch, which does not run
// once `deadline` (the call's) has passed: kDeadlineExceeded.
Result<std::vector<Image>> ComposeBatch(
    LoadedAvatar& avatar, const monolithic::CompositeBatchRequest& request,
    CompositeTimings* timings, const CompositeBehaviour& behaviour = {},
    std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max());

struct MonolithicOptions {
  AvatarRegistryOptions avatars;  // the server's avatar repository (shared with its other services)
  int worker_threads = 2;         // requests run on these, in arrival order
  CompositeBehaviour behaviour;
};

class MonolithicService final : public monolithic::MonolithicService::CallbackService {
 public:
  // `gate` refuses new calls while the server drains.
  MonolithicService(MonolithicOptions options, AvatarRegistry* registry, Metrics* metrics,
                    const CallGate* gate);
  ~MonolithicService() override;  // finishes queued work, then joins the workers

  AvatarRegistry& registry() { return *registry_; }

  grpc::ServerUnaryReactor* InferBatchComposite(
      grpc::CallbackServerContext* call, const monolithic::CompositeBatchRequest* request,
      monolithic::CompositeBatchResponse* response) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* call,
                                       const monolithic::ListModelsRequest* request,
                                       monolithic::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* LoadModel(grpc::CallbackServerContext* call,
                                      const monolithic::LoadModelRequest* request,
                                      monolithic::LoadModelResponse* response) override;
  grpc::ServerUnaryReactor* UnloadModel(grpc::CallbackServerContext* call,
                                        const monolithic::UnloadModelRequest* request,
                                        monolithic::UnloadModelResponse* response) override;
  grpc::ServerUnaryReactor* GetModelStats(grpc::CallbackServerContext* call,
                                          const monolithic::GetModelStatsRequest* request,
                                          monolithic::GetModelStatsResponse* response) override;
  grpc::ServerUnaryReactor* Health(grpc::CallbackServerContext* call,
                                   const monolithic::HealthRequest* request,
                                   monolithic::HealthResponse* response) override;

 private:
  // Fills `response` from the request's avatar (success=false with the error on failure) and
  // returns the outcome; `start`: when the request's work began.
  Status RunComposite(std::chrono::steady_clock::time_point start, Result<AvatarLease> avatar,
                      const monolithic::CompositeBatchRequest& request,
                      monolithic::CompositeBatchResponse* response);
  grpc::ServerUnaryReactor* Reply(grpc::CallbackServerContext* call, const char* method,
                                  const Status& outcome = Status::Ok());

  MonolithicOptions options_;
  Metrics* metrics_;
  const CallGate* gate_;
  AvatarRegistry* registry_;
  AvatarRequests requests_;  // last: its threads stop before the rest goes
};

}  // namespace lipsync::server
