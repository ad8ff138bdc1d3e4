#include "server/protocols/monolithic_service.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <functional>
#include <opencv2/core.hpp>

#include "lipsync/frames.h"
#include "pipeline/stream/lipsync_stream.h"
#include "pipeline/stream/stored_frames.h"
#include "server/core/for_each_frame.h"
#include "server/protocols/request_codec.h"

namespace lipsync::server {
namespace {

static_assert(std::endian::native == std::endian::little,
              "request tensors are little-endian floats copied as they are");

using Clock = std::chrono::steady_clock;

double MsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// Checks `count` float32 values held as bytes (a request's tensor, from value `first` on) without a
// float pointer into them (they may be misaligned) or a copy of the whole tensor. A block at a
// time: its exponent bits are tested without a branch (a loop the compiler vectorises), and only a
// block with a NaN or an infinity is searched for the first one.
Status CheckFiniteBytes(const std::string& bytes, size_t first, size_t count, const char* what) {
  constexpr size_t kBlock = 4096;
  constexpr uint32_t kExponent = 0x7f800000u;  // all ones: NaN or infinite
  uint32_t bits[kBlock];
  for (size_t at = first; at < first + count; at += kBlock) {
    const size_t n = std::min(kBlock, first + count - at);
    std::memcpy(bits, bytes.data() + at * sizeof(float), n * sizeof(float));
    uint32_t bad = 0;
    for (size_t i = 0; i < n; ++i) bad |= static_cast<uint32_t>((bits[i] & kExponent) == kExponent);
    if (!bad) continue;
    for (size_t i = 0; i < n; ++i) {
      if ((bits[i] & kExponent) != kExponent) continue;
      const bool nan = (bits[i] & 0x007fffffu) != 0;
      return InvalidArgument(std::string(what) + " value " + std::to_string(at + i) + " is " +
                             (nan ? "NaN" : "infinite"));
    }
  }
  return Status::Ok();
}

}  // namespace

Status CheckCompositeRequest(const monolithic::CompositeBatchRequest& request) {
  const int batch = request.batch_size();
  if (batch < 1 || batch > kCompositeMaxBatch) {
    return InvalidArgument("batch_size " + std::to_string(batch) + " is outside 1.." +
                           std::to_string(kCompositeMaxBatch));
  }
  // The Go server never reads sample_rate and its clients leave it unset: 0 means 16 kHz.
  const int rate = request.sample_rate();
  if (rate != 0 && (rate < 8000 || rate > 192000)) {
    return InvalidArgument("sample_rate " + std::to_string(rate) +
                           " is outside 8000..192000 Hz (0: 16000)");
  }
  if (request.start_frame_idx() < 0) {
    return InvalidArgument("start_frame_idx " + std::to_string(request.start_frame_idx()) +
                           " is negative");
  }
  return Status::Ok();
}

void PasteStretched(const uint8_t* face, int s, const CropRect& rect, Image& frame) {
  const int w = rect.width(), h = rect.height();
  // float32 throughout, as that server computes.
  const float x_ratio = static_cast<float>(s) / static_cast<float>(w);
  const float y_ratio = static_cast<float>(s) / static_cast<float>(h);
  for (int y = 0; y < h; ++y) {
    const float sy = static_cast<float>(y) * y_ratio;
    const int y0 = static_cast<int>(sy), y1 = std::min(y0 + 1, s - 1);
    const float wy = sy - static_cast<float>(y0);
    uint8_t* row =
        frame.bgr.data() + (static_cast<size_t>(rect.y1 + y) * frame.width + rect.x1) * 3;
    for (int x = 0; x < w; ++x) {
      const float sx = static_cast<float>(x) * x_ratio;
      const int x0 = static_cast<int>(sx), x1 = std::min(x0 + 1, s - 1);
      const float wx = sx - static_cast<float>(x0);
      for (int c = 0; c < 3; ++c) {
        auto at = [&](int px, int py) {
          return static_cast<float>(face[(static_cast<size_t>(py) * s + px) * 3 + c]);
        };
        const float top = at(x0, y0) * (1 - wx) + at(x1, y0) * wx;
        const float bottom = at(x0, y1) * (1 - wx) + at(x1, y1) * wx;
        row[x * 3 + c] = static_cast<uint8_t>(top * (1 - wy) + bottom * wy);
      }
    }
  }
}

Result<std::vector<Image>> ComposeBatch(LoadedAvatar& a,
                                        const monolithic::CompositeBatchRequest& request,
                                        CompositeTimings* timings,
                                        const CompositeBehaviour& behaviour,
                                        Clock::time_point deadline) {
  LIPSYNC_RETURN_IF_ERROR(CheckCompositeRequest(request));
  const int batch = request.batch_size();
  const int s = a.layout.inner_size;
  const size_t visual_bytes = static_cast<size_t>(batch) * 6 * s * s * sizeof(float);
  if (request.visual_frames().size() != visual_bytes) {
    return InvalidArgument("visual_frames holds " + std::to_string(request.visual_frames().size()) +
                           " bytes; batch_size " + std::to_string(batch) + " needs " +
                           std::to_string(visual_bytes) + " (batch_size x 6 x " +
                           std::to_string(s) + " x " + std::to_string(s) + " float32)");
  }
  const size_t face_values = static_cast<size_t>(6) * s * s;
  LIPSYNC_RETURN_IF_ERROR(ForEachFrame(batch, [&](int i) {
    return CheckFiniteBytes(request.visual_frames(), static_cast<size_t>(i) * face_values,
                            face_values, "visual_frames");
  }));

  auto start = Clock::now();
  auto audio = CompositeAudioInput(*a.encoder, request, behaviour.align);
  if (!audio.ok()) return audio.status();
  timings->audio_ms = MsSince(start);

  // The request is one batch of a lip-sync stream given its inputs: the client's faces and the
  // windows of its chunk, the avatar's frames from start_frame_idx on (the Go server's loop).
  const int64_t n = a.avatar.frame_count();
  LIPSYNC_ASSIGN_OR_RETURN(
      FrameSequence walk,
      FrameSequence::Create(n, FrameOrder::kLoop, request.start_frame_idx() % n));
  // Crops only at paste time, on the pool: the faces are given.
  stream::StoredFrames avatar_frames(a.frames, a.avatar.crop_rects(), a.layout,
                                     stream::StoredFramesOptions::WithoutCrops());
  stream::StreamOptions options;
  options.fps = a.avatar.manifest().fps;
  options.batch = batch;
  options.max_batches = 1;
  options.origin = runtime::Origin::kMonolithic;
  options.frame_form = false;  // the client's float input
  // The model reads the request's faces where they are (61 MiB at batch 25, not copied again).
  options.visual_in_place =
      reinterpret_cast<uintptr_t>(request.visual_frames().data()) % alignof(float) == 0;
  options.deadline = deadline;
  if (behaviour.paste == Behaviour::kOld) {
    options.paste = [s](const uint8_t* face, const stream::SourceFrame& source, Image& frame) {
      PasteStretched(face, s, source.rect, frame);
      return Status::Ok();
    };
  }
  start = Clock::now();
  stream::LipSyncStream stream(*a.scheduler, a.scheduled, *a.encoder, avatar_frames, walk, a.layout,
                               std::move(options));
  LIPSYNC_RETURN_IF_ERROR(stream.PushInputs(*audio, request.visual_frames().data()));
  LIPSYNC_RETURN_IF_ERROR(stream.Finish());
  for (;;) {
    LIPSYNC_ASSIGN_OR_RETURN(bool prepared, stream.Prepare(true));
    if (!prepared) break;
  }

  std::vector<Image> frames(static_cast<size_t>(batch));
  const auto take = [&]() -> Status {
    LIPSYNC_ASSIGN_OR_RETURN(std::optional<stream::StreamFrame> frame, stream.Next());
    if (!frame) return Internal("the stream ended before the batch's last frame");
    frames[static_cast<size_t>(frame->index)] = std::move(frame->frame);
    return Status::Ok();
  };
  // The first frame waits here for the batch to run, so that the pool's threads never wait on
  // the model. The frames are independent: the rest are taken and pasted on OpenCV's thread
  // pool, so that one client's batch (the Go clients send one at a time) uses the cores.
  LIPSYNC_RETURN_IF_ERROR(take());
  LIPSYNC_RETURN_IF_ERROR(ForEachFrame(batch - 1, [&](int) { return take(); }));
  const stream::StreamStats stats = stream.stats();
  timings->inference_ms = stats.infer.busy_s * 1000;
  // The batch runs between its crops and its pastes: the rest of the time is theirs.
  timings->composite_ms = std::max(0.0, MsSince(start) - timings->inference_ms);
  return frames;
}

MonolithicService::MonolithicService(MonolithicOptions options, AvatarRegistry* registry,
                                     Metrics* metrics, const CallGate* gate)
    : options_(std::move(options)),
      metrics_(metrics),
      gate_(gate),
      registry_(registry),
      requests_(registry, options_.worker_threads) {}

MonolithicService::~MonolithicService() = default;

grpc::ServerUnaryReactor* MonolithicService::Reply(grpc::CallbackServerContext* call,
                                                   const char* method, const Status& outcome) {
  if (metrics_) metrics_->RecordRequest(method, StatusCodeName(outcome.code()));
  auto* reactor = call->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* MonolithicService::InferBatchComposite(
    grpc::CallbackServerContext* call, const monolithic::CompositeBatchRequest* request,
    monolithic::CompositeBatchResponse* response) {
  if (gate_->closed()) return RefuseUnary(call);
  auto start = std::make_shared<Clock::time_point>(Clock::now());
  return requests_.PostUnaryCall(
      metrics_, call, "InferBatchComposite",
      [request, start]() -> Result<AvatarRequests::Named> {
        *start = Clock::now();
        LIPSYNC_RETURN_IF_ERROR(CheckCompositeRequest(*request));
        return AvatarRequests::Named{request->model_id()};
      },
      [this, request, response, start](Result<AvatarLease> avatar) {
        // A failure that escaped as an exception still answers success=false.
        const Status outcome = runtime::CatchAll("InferBatchComposite", [&] {
          return RunComposite(*start, std::move(avatar), *request, response);
        });
        if (!outcome.ok() && response->error().empty()) {
          response->clear_composited_frames();
          response->set_success(false);
          response->set_error(Bounded(outcome.message()));
        }
        return outcome;
      });
}

Status MonolithicService::RunComposite(Clock::time_point start, Result<AvatarLease> avatar,
                                       const monolithic::CompositeBatchRequest& request,
                                       monolithic::CompositeBatchResponse* response) {
  response->set_gpu_id(registry_->gpu_id());
  auto fail = [&](const Status& status) {
    response->clear_composited_frames();
    response->set_success(false);
    response->set_error(Bounded(status.message()));
    response->set_total_time_ms(static_cast<float>(MsSince(start)));
    return status;
  };
  if (!avatar.ok()) return fail(avatar.status());
  response->set_model_loaded(avatar->loaded_now);
  LoadedAvatar& a = *avatar->avatar;
  if (avatar->loaded_now) response->set_model_load_time_ms(static_cast<float>(a.load_ms));

  CompositeTimings timings;
  auto frames = ComposeBatch(a, request, &timings, options_.behaviour, avatar->deadline);
  if (!frames.ok()) return fail(frames.status());
  auto encode_start = Clock::now();
  const int batch = static_cast<int>(frames->size());
  std::vector<std::string> jpegs(static_cast<size_t>(batch));
  const Status encoded = ForEachFrame(batch, [&](int i) -> Status {
    LIPSYNC_ASSIGN_OR_RETURN(jpegs[static_cast<size_t>(i)],
                             EncodeJpeg((*frames)[static_cast<size_t>(i)], kCompositeJpegQuality));
    return Status::Ok();
  });
  if (!encoded.ok()) return fail(encoded);
  for (std::string& jpeg : jpegs) response->add_composited_frames(std::move(jpeg));
  timings.composite_ms += MsSince(encode_start);

  a.RecordRequest(timings.inference_ms);
  response->set_audio_processing_ms(static_cast<float>(timings.audio_ms));
  response->set_inference_time_ms(static_cast<float>(timings.inference_ms));
  response->set_composite_time_ms(static_cast<float>(timings.composite_ms));
  response->set_success(true);
  response->set_total_time_ms(static_cast<float>(MsSince(start)));
  return Status::Ok();
}

grpc::ServerUnaryReactor* MonolithicService::ListModels(grpc::CallbackServerContext* call,
                                                        const monolithic::ListModelsRequest*,
                                                        monolithic::ListModelsResponse* response) {
  if (gate_->closed()) return RefuseUnary(call);
  std::map<std::string, std::shared_ptr<LoadedAvatar>> models;
  for (const auto& id : registry_->Available()) models[id] = nullptr;
  for (auto& a : registry_->Loaded()) models[a->id] = a;
  for (const auto& [id, a] : models) {
    auto* info = response->add_models();
    info->set_model_id(id);
    info->set_loaded(a != nullptr);
    info->set_gpu_id(a ? registry_->gpu_id() : -1);
    if (!a) continue;
    const int64_t requests = a->requests.load();
    info->set_memory_mb(a->memory_bytes >> 20);
    info->set_request_count(static_cast<int32_t>(requests));
    info->set_avg_inference_ms(
        requests ? static_cast<float>(a->inference_us.load() / 1000.0 / requests) : 0.f);
  }
  return Reply(call, "ListModels");
}

grpc::ServerUnaryReactor* MonolithicService::LoadModel(grpc::CallbackServerContext* call,
                                                       const monolithic::LoadModelRequest* request,
                                                       monolithic::LoadModelResponse* response) {
  if (gate_->closed()) return RefuseUnary(call);
  // On the repository's loader thread: a Go model's import holds no inference worker.
  return PostUnaryCall(registry_->loader(), metrics_, call, "LoadModel", [this, request, response] {
    const auto start = Clock::now();
    auto avatar = registry_->Load(request->model_id());
    response->set_success(avatar.ok());
    response->set_gpu_id(registry_->gpu_id());
    response->set_load_time_ms(static_cast<float>(MsSince(start)));
    if (!avatar.ok()) response->set_error(Bounded(avatar.status().message()));
    return avatar.status();
  });
}

grpc::ServerUnaryReactor* MonolithicService::UnloadModel(
    grpc::CallbackServerContext* call, const monolithic::UnloadModelRequest* request,
    monolithic::UnloadModelResponse* response) {
  if (gate_->closed()) return RefuseUnary(call);
  Status unloaded = registry_->Unload(request->model_id());
  response->set_success(unloaded.ok());
  if (!unloaded.ok()) response->set_error(Bounded(unloaded.message()));
  return Reply(call, "UnloadModel", unloaded);
}

grpc::ServerUnaryReactor* MonolithicService::GetModelStats(
    grpc::CallbackServerContext* call, const monolithic::GetModelStatsRequest*,
    monolithic::GetModelStatsResponse* response) {
  if (gate_->closed()) return RefuseUnary(call);
  for (auto& a : registry_->Loaded()) {
    auto* stats = response->add_models();
    const int64_t requests = a->requests.load();
    const int64_t inference_us = a->inference_us.load();
    stats->set_model_id(a->id);
    stats->set_loaded(true);
    stats->set_gpu_id(registry_->gpu_id());
    stats->set_memory_mb(a->memory_bytes >> 20);
    stats->set_request_count(static_cast<int32_t>(requests));
    stats->set_total_inference_ms(inference_us / 1000);
    stats->set_avg_inference_ms(requests ? static_cast<float>(inference_us / 1000.0 / requests)
                                         : 0.f);
    stats->set_last_used_timestamp(a->last_used_unix_s.load());
  }
  return Reply(call, "GetModelStats");
}

grpc::ServerUnaryReactor* MonolithicService::Health(grpc::CallbackServerContext* call,
                                                    const monolithic::HealthRequest*,
                                                    monolithic::HealthResponse* response) {
  if (gate_->closed()) return RefuseUnary(call);
  response->set_healthy(true);
  response->set_loaded_models(registry_->Usage().loaded);
  response->set_max_models(registry_->max_models());
  if (registry_->gpu_id() >= 0) response->add_gpu_ids(registry_->gpu_id());
  return Reply(call, "Health");
}

}  // namespace lipsync::server
