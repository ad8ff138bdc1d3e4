#include "server/protocols/lipsyncsrv_service.h"

#include <chrono>
#include <cstring>
#include <filesystem>

#include "lipsync/audio.h"
#include "server/core/avatar_faces.h"
#include "server/core/for_each_frame.h"
#include "server/protocols/lipsyncsrv_audio.h"
#include "server/protocols/monolithic_service.h"

namespace lipsync::server {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// Whether a request's model name is short enough to send back in the response, as the Python
// server does; a longer one is a payload, not a name.
bool EchoesName(const std::string& model) { return model.size() <= kMaxModelIdBytes; }

int32_t MsSince(Clock::time_point start) {
  return static_cast<int32_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count());
}

// The per-frame sequence of an audio file: the encoder's embeddings e with the first and last
// repeated ([e0] + e + [e_last], model spec section 2 step 8), one row per video frame.
Result<Tensor> SequenceFromAudio(AudioEncoder& encoder, const std::string& path, double fps) {
  LIPSYNC_ASSIGN_OR_RETURN(std::vector<float> pcm, DecodeAudioFile(path));
  LIPSYNC_ASSIGN_OR_RETURN(Tensor mel, MelSpectrogram(pcm.data(), pcm.size()));
  LIPSYNC_ASSIGN_OR_RETURN(Tensor windows, MelWindows(mel, fps));
  LIPSYNC_ASSIGN_OR_RETURN(Tensor e, encoder.Encode(windows));
  return FeatureSequenceFromEmbeddings(e);
}

// Why an avatar has no audio to show without an override, and how to give it some.
std::string NoFeaturesMessage(const std::string& id, const std::string& why) {
  return "avatar '" + id + "' has no precomputed audio features and " + why +
         "; send an audio_override (base64 int16 PCM at 24 kHz, or a file in its folder), or add "
         "features: lipsync features --audio SPEECH --encoder ENCODER --sequence-out "
         "<avatar>/audio_features.npy, and \"audio_features\": \"audio_features.npy\" in its "
         "avatar.json";
}

void Fail(lipsyncsrv::InferenceResponse* r, const std::string& error) {
  r->set_success(false);
  r->clear_prediction_data();
  r->clear_bounds();
  r->set_error(Bounded(error));
}

}  // namespace

Result<std::string> ResolveAudioOverride(const std::string& dir, const std::string& name) {
  if (name.empty()) return InvalidArgument("audio_override is empty");
  std::error_code ec;
  const fs::path folder = fs::weakly_canonical(fs::absolute(dir, ec), ec);
  if (ec) return NotFound("avatar folder '" + dir + "' not found");
  fs::path p(name);
  if (p.is_relative()) p = folder / p;
  const fs::path resolved = fs::weakly_canonical(p, ec);
  const fs::path relative = resolved.lexically_relative(folder);
  if (ec || relative.empty() || *relative.begin() == ".." || relative == ".") {
    return InvalidArgument("audio_override " + Quoted(name) + " is outside the avatar folder '" +
                           dir + "'; name a file inside it");
  }
  if (!fs::is_regular_file(resolved, ec)) {
    return NotFound("audio_override " + Quoted(name) + " not found in the avatar folder '" + dir +
                    "'");
  }
  return resolved.string();
}

LipSyncSrvService::LipSyncSrvService(AvatarRegistry* registry, std::string avatar_root,
                                     LipSyncSrvOptions options, Metrics* metrics,
                                     const CallGate* gate)
    : registry_(registry),
      root_(std::move(avatar_root)),
      options_(std::move(options)),
      metrics_(metrics),
      gate_(gate),
      requests_(registry, options_.worker_threads) {}

LipSyncSrvService::~LipSyncSrvService() = default;

Result<std::shared_ptr<const Tensor>> LipSyncSrvService::FeatureSequence(
    const std::shared_ptr<LoadedAvatar>& avatar, const std::string& audio_override) {
  const Avatar& a = avatar->avatar;
  std::string path;
  bool own_sound = false;
  if (!audio_override.empty()) {
    LIPSYNC_ASSIGN_OR_RETURN(path, ResolveAudioOverride(a.dir(), audio_override));
  } else if (!a.audio_features_path().empty()) {
    path = a.audio_features_path();
  } else if (a.frames_are_video()) {
    path = a.frames_path();  // the sound of the avatar's own video, when it has one
    own_sound = true;
  } else {
    return FailedPrecondition(NoFeaturesMessage(avatar->id, "its frames are images"));
  }
  const std::string key = avatar->id + '\n' + path;
  {
    std::lock_guard lock(cache_mu_);
    auto it = sequences_.find(key);
    if (it != sequences_.end() && it->second.owner.lock() == avatar) return it->second.rows;
  }
  // A .npy names features; anything else is audio for the avatar's encoder.
  const bool npy = fs::path(path).extension() == ".npy" || fs::path(path).extension() == ".NPY";
  Result<Tensor> rows =
      npy ? LoadFeatureSequence(path) : SequenceFromAudio(*avatar->encoder, path, a.manifest().fps);
  if (!rows.ok() && own_sound) {
    return FailedPrecondition(NoFeaturesMessage(avatar->id, "the sound of its frames video '" +
                                                                path + "' gives none (" +
                                                                rows.status().message() + ")"));
  }
  if (!rows.ok()) {
    return rows.status().WithContext(audio_override.empty() ? "audio features" : "audio_override");
  }
  auto shared = std::make_shared<const Tensor>(std::move(*rows));
  std::lock_guard lock(cache_mu_);
  if (sequences_.size() >= 64) sequences_.clear();  // a bound, not a policy: they reload quickly
  sequences_[key] = {avatar, shared};
  return shared;
}

Result<std::shared_ptr<const Tensor>> LipSyncSrvService::PcmWindow(
    const std::shared_ptr<LoadedAvatar>& avatar, const std::string& audio_override) {
  LIPSYNC_ASSIGN_OR_RETURN(std::vector<float> pcm, DecodePcmOverride(audio_override));
  Result<Tensor> window = options_.window == Behaviour::kOld
                              ? PythonPcmOverrideWindow(pcm)
                              : PcmOverrideWindow(*avatar->encoder, pcm);
  if (!window.ok()) return window.status();
  return std::make_shared<const Tensor>(std::move(*window));
}

Result<Tensor> LipSyncSrvService::AudioWindows(const std::shared_ptr<LoadedAvatar>& avatar,
                                               const std::string& audio_override,
                                               const std::vector<int64_t>& frames) {
  if (IsPcmOverride(audio_override)) {
    // The model's default override (LoadModel) is decoded once per avatar load.
    const std::string key = avatar->id + "\npcm\n" + audio_override;
    std::shared_ptr<const Tensor> window;
    bool is_default = false;
    {
      std::lock_guard lock(cache_mu_);
      auto d = default_overrides_.find(avatar->id);
      is_default = d != default_overrides_.end() && d->second == audio_override;
      auto it = sequences_.find(key);
      if (is_default && it != sequences_.end() && it->second.owner.lock() == avatar) {
        window = it->second.rows;
      }
    }
    if (!window) {
      LIPSYNC_ASSIGN_OR_RETURN(window, PcmWindow(avatar, audio_override));
      if (is_default) {
        std::lock_guard lock(cache_mu_);
        if (sequences_.size() >= 64) sequences_.clear();
        sequences_[key] = {avatar, window};
      }
    }
    // One window drives every frame of the request, as on the Python server.
    Tensor out = Tensor::Uninitialized(DataType::kFloat32,
                                       {static_cast<int64_t>(frames.size()), 32, 16, 16});
    for (size_t k = 0; k < frames.size(); ++k) {
      std::memcpy(out.data_as<float>() + k * 8192, window->data(), window->byte_size());
    }
    return out;
  }
  LIPSYNC_ASSIGN_OR_RETURN(auto sequence, FeatureSequence(avatar, audio_override));
  if (options_.window == Behaviour::kOld) return PythonSequenceWindows(*sequence, frames);
  return AudioWindowsFromSequence(*sequence, frames);
}

Result<AvatarRequests::Named> LipSyncSrvService::NameFrames(const std::string& model,
                                                            size_t frames) {
  if (frames == 0) return AvatarRequests::Named{model, "model_name", /*none=*/true};
  if (frames > static_cast<size_t>(kLipSyncSrvMaxFrames)) {
    return InvalidArgument("frame_ids holds " + std::to_string(frames) + " ids; at most " +
                           std::to_string(kLipSyncSrvMaxFrames) + " per call");
  }
  return AvatarRequests::Named{model, "model_name"};
}

Status LipSyncSrvService::RunFrames(Clock::time_point start, const Result<AvatarLease>& avatar,
                                    const std::string& model, const std::vector<int32_t>& frame_ids,
                                    const std::optional<std::string>& audio_override,
                                    std::vector<lipsyncsrv::InferenceResponse>* responses) {
  responses->assign(frame_ids.size(), {});
  const bool echo_name = EchoesName(model);
  for (size_t i = 0; i < frame_ids.size(); ++i) {
    if (echo_name) (*responses)[i].set_model_name(model);
    (*responses)[i].set_frame_id(frame_ids[i]);
  }
  auto fail_all = [&](const Status& status) {
    for (auto& r : *responses) {
      Fail(&r, status.message());
      r.set_processing_time_ms(MsSince(start));
    }
    return status;
  };
  if (frame_ids.empty()) return Status::Ok();
  Status outcome = Status::Ok();  // the first failure answered
  const auto failed = [&outcome](const Status& status) {
    if (outcome.ok()) outcome = status;
    return status.message();
  };
  if (!avatar.ok()) return fail_all(avatar.status());
  const bool loaded_now = avatar->loaded_now;
  LoadedAvatar& a = *avatar->avatar;
  // An empty override is no override, as the Python server reads it (its JavaScript clients send
  // '' without audio): the model's default from LoadModel applies.
  std::string override_name;
  if (audio_override && !audio_override->empty()) {
    override_name = *audio_override;
  } else {
    std::lock_guard lock(cache_mu_);
    auto it = default_overrides_.find(model);
    if (it != default_overrides_.end()) override_name = it->second;
  }
  const int s = a.layout.inner_size;
  const std::string shape = std::to_string(s) + "x" + std::to_string(s) + "x3";
  std::vector<size_t> valid;  // indices into frame_ids
  std::vector<int64_t> frames;
  for (size_t i = 0; i < frame_ids.size(); ++i) {
    auto& r = (*responses)[i];
    r.set_auto_loaded(loaded_now);
    r.set_prediction_shape(shape);
    if (Status in_range = CheckFrameIndex(a, frame_ids[i], "frame_id"); !in_range.ok()) {
      Fail(&r, failed(in_range));
      continue;
    }
    valid.push_back(i);
    frames.push_back(frame_ids[i]);
  }
  const int batch = static_cast<int>(frames.size());
  if (batch > 0) {
    auto windows = AudioWindows(avatar->avatar, override_name, frames);
    if (!windows.ok()) return fail_all(windows.status());
    const Tensor audio = std::move(*windows);
    // The face crops [batch,C,C,3]; the model reads their centres.
    const int c = a.layout.crop_size;
    const size_t crop_bytes = static_cast<size_t>(c) * c * 3;
    const size_t face_bytes = static_cast<size_t>(s) * s * 3;
    Tensor crops = Tensor::Uninitialized(DataType::kUInt8, {batch, c, c, 3});
    // Each frame's crop as kept with the decoded frames, or cut on OpenCV's pool (an encoded frame
    // is decoded for it).
    Status status = ForEachFrame(batch, [&](int k) -> Status {
      const auto index = static_cast<size_t>(frames[static_cast<size_t>(k)]);
      uint8_t* to = crops.data_as<uint8_t>() + k * crop_bytes;
      const Image* kept = a.frames.crop(static_cast<int64_t>(index));
      if (kept && kept->bgr.size() == crop_bytes) {
        std::memcpy(to, kept->bgr.data(), crop_bytes);
        return Status::Ok();
      }
      LIPSYNC_ASSIGN_OR_RETURN(auto frame, a.frames.Get(static_cast<int64_t>(index)));
      LIPSYNC_ASSIGN_OR_RETURN(Image crop,
                               CropFace(*frame, a.avatar.crop_rects()[index], a.layout));
      std::memcpy(to, crop.bgr.data(), crop_bytes);
      return Status::Ok();
    });
    std::vector<uint8_t> output(static_cast<size_t>(batch) * face_bytes);
    const auto inference_start = Clock::now();
    if (status.ok()) {
      status =
          RunAvatarFaces(a, crops.view(), audio.view(), output.data(), runtime::Origin::kLipSyncSrv,
                         runtime::Priority::kOffline, avatar->deadline);
    }
    const double inference_ms =
        std::chrono::duration<double, std::milli>(Clock::now() - inference_start).count();
    Image face{s, s, std::vector<uint8_t>(static_cast<size_t>(s) * s * 3)};
    for (int k = 0; k < batch; ++k) {
      auto& r = (*responses)[valid[static_cast<size_t>(k)]];
      if (!status.ok()) {
        Fail(&r, failed(status));
        continue;
      }
      std::memcpy(face.bgr.data(), output.data() + k * face_bytes, face_bytes);
      auto jpeg = EncodeJpeg(face, kLipSyncSrvJpegQuality);
      if (!jpeg.ok()) {
        Fail(&r, failed(jpeg.status()));
        continue;
      }
      const CropRect& rect = a.avatar.crop_rects()[static_cast<size_t>(frames[k])];
      r.set_success(true);
      r.set_prediction_data(std::move(*jpeg));
      for (int v : {rect.x1, rect.y1, rect.x2, rect.y2, rect.width(), rect.height()}) {
        r.add_bounds(static_cast<float>(v));
      }
    }
    if (status.ok()) a.RecordRequest(inference_ms);
  }
  // The frames ran together: each answer carries the time of the whole call.
  for (auto& r : *responses) r.set_processing_time_ms(MsSince(start));
  return outcome;
}

Status LipSyncSrvService::RunLoadModel(const lipsyncsrv::LoadModelRequest& request,
                                       lipsyncsrv::LoadModelResponse* response) {
  const auto start = Clock::now();
  const std::string& model = request.model_name();
  if (EchoesName(model)) response->set_model_name(model);
  auto fail = [&](const Status& status) {
    response->set_success(false);
    response->set_error(Bounded(status.message()));
    response->set_message("cannot load model " + Quoted(model));
    response->set_initialization_time_ms(MsSince(start));
    return status;
  };
  Status name_ok = CheckModelId(model, "model_name");
  if (!name_ok.ok()) return fail(name_ok);
  std::string message;
  if (!request.package_path().empty()) {
    std::error_code ec;
    if (!fs::is_directory(root_, ec)) {
      return fail(FailedPrecondition(
          "model packages are imported into a folder of avatars, and this server's avatars come "
          "from '" +
          root_ + "', which is not a folder"));
    }
    const std::string dir = root_ + "/" + model;
    if (fs::exists(fs::path(dir) / kAvatarManifestName, ec)) {
      message = "avatar '" + model + "' exists already (imported before); the package was not " +
                "imported again; ";
    } else {
      AvatarImportOptions import;
      import.out_dir = dir;
      import.name = model;
      import.audio_encoder = options_.audio_encoder;
      import.export_checkpoint = options_.export_checkpoint;
      auto avatar = options_.import_package
                        ? options_.import_package(request.package_path(), import)
                        : ImportLipSyncSrvPackage(request.package_path(), import,
                                                  options_.export_options, options_.package_limits);
      if (!avatar.ok()) return fail(avatar.status());
      message =
          "imported package " + Quoted(request.package_path()) + " as avatar '" + model + "'; ";
    }
  }
  bool loaded_now = false;
  auto avatar = registry_->Load(model, &loaded_now);
  if (!avatar.ok()) return fail(avatar.status());
  if (request.has_audio_override()) {
    std::optional<std::string> previous;
    {
      std::lock_guard lock(cache_mu_);
      if (auto it = default_overrides_.find(model); it != default_overrides_.end()) {
        previous = it->second;
      }
      default_overrides_[model] = request.audio_override();
    }
    // Checked (and a PCM override decoded) now, so that a bad one fails here and the model keeps
    // the default it had.
    auto windows = AudioWindows(*avatar, request.audio_override(), {0});
    if (!windows.ok()) {
      std::lock_guard lock(cache_mu_);
      if (previous) {
        default_overrides_[model] = *previous;
      } else {
        default_overrides_.erase(model);
      }
      return fail(windows.status());
    }
  }
  message += loaded_now ? "loaded" : "already loaded";
  message += " (" + std::to_string((*avatar)->avatar.frame_count()) + " frames)";
  response->set_success(true);
  response->set_message(message);
  response->set_initialization_time_ms(MsSince(start));
  return Status::Ok();
}

grpc::ServerUnaryReactor* LipSyncSrvService::GenerateInference(
    grpc::CallbackServerContext* call, const lipsyncsrv::InferenceRequest* request,
    lipsyncsrv::InferenceResponse* response) {
  if (gate_->closed()) return RefuseUnary(call);
  auto start = std::make_shared<Clock::time_point>(Clock::now());
  return requests_.PostUnaryCall(
      metrics_, call, "GenerateInference",
      [request, start] {
        *start = Clock::now();
        return NameFrames(request->model_name(), 1);
      },
      [this, request, response, start](Result<AvatarLease> avatar) {
        std::vector<lipsyncsrv::InferenceResponse> out;
        Status outcome = RunFrames(
            *start, avatar, request->model_name(), {request->frame_id()},
            request->has_audio_override() ? std::optional(request->audio_override()) : std::nullopt,
            &out);
        *response = std::move(out[0]);
        return outcome;
      });
}

grpc::ServerUnaryReactor* LipSyncSrvService::GenerateBatchInference(
    grpc::CallbackServerContext* call, const lipsyncsrv::BatchInferenceRequest* request,
    lipsyncsrv::BatchInferenceResponse* response) {
  if (gate_->closed()) return RefuseUnary(call);
  auto start = std::make_shared<Clock::time_point>(Clock::now());
  return requests_.PostUnaryCall(
      metrics_, call, "GenerateBatchInference",
      [request, start] {
        *start = Clock::now();
        return NameFrames(request->model_name(), static_cast<size_t>(request->frame_ids_size()));
      },
      [this, request, response, start](Result<AvatarLease> avatar) {
        std::vector<lipsyncsrv::InferenceResponse> out;
        Status outcome = RunFrames(
            *start, avatar, request->model_name(),
            {request->frame_ids().begin(), request->frame_ids().end()},
            request->has_audio_override() ? std::optional(request->audio_override()) : std::nullopt,
            &out);
        for (auto& r : out) *response->add_responses() = std::move(r);
        response->set_total_processing_time_ms(MsSince(*start));
        return outcome;
      });
}

grpc::ServerUnaryReactor* LipSyncSrvService::LoadModel(grpc::CallbackServerContext* call,
                                                       const lipsyncsrv::LoadModelRequest* request,
                                                       lipsyncsrv::LoadModelResponse* response) {
  if (gate_->closed()) return RefuseUnary(call);
  // On the repository's loader thread: an import (a checkpoint export) holds no inference worker.
  return PostUnaryCall(registry_->loader(), metrics_, call, "LoadModel",
                       [this, request, response] { return RunLoadModel(*request, response); });
}

// One request at a time per stream: read, run on a worker (once its avatar is loaded), write,
// read the next. Answers thus leave in request order.
class LipSyncSrvService::StreamReactor
    : public grpc::ServerBidiReactor<lipsyncsrv::InferenceRequest, lipsyncsrv::InferenceResponse> {
 public:
  explicit StreamReactor(LipSyncSrvService* service) : service_(service) { StartRead(&request_); }
  void OnReadDone(bool ok) override {
    if (!ok) return Finish(grpc::Status::OK);  // the client closed its side
    service_->requests_.Post([this] {
      const auto start = Clock::now();
      auto named = NameFrames(request_.model_name(), 1);
      if (!named.ok()) return Answer(start, named.status());
      service_->requests_.Resolve(
          *named, [this, start](Result<AvatarLease> avatar) { Answer(start, std::move(avatar)); });
    });
  }
  void OnWriteDone(bool ok) override {
    if (!ok) return Finish(grpc::Status(grpc::StatusCode::CANCELLED, "stream closed"));
    StartRead(&request_);
  }
  void OnDone() override { delete this; }

 private:
  // Runs the request on its avatar and writes the answer, whatever happens.
  void Answer(Clock::time_point start, const Result<AvatarLease>& avatar) {
    std::vector<lipsyncsrv::InferenceResponse> out;
    const Status outcome = runtime::CatchAll("StreamInference", [&] {
      return service_->RunFrames(
          start, avatar, request_.model_name(), {request_.frame_id()},
          request_.has_audio_override() ? std::optional(request_.audio_override()) : std::nullopt,
          &out);
    });
    if (out.empty()) out.emplace_back();
    response_ = std::move(out[0]);
    if (!outcome.ok() && response_.error().empty()) {
      response_.set_success(false);
      response_.set_error(Bounded(outcome.message()));
    }
    if (service_->metrics_) {
      service_->metrics_->RecordRequest("StreamInference", StatusCodeName(outcome.code()));
    }
    StartWrite(&response_);
  }

  LipSyncSrvService* service_;
  lipsyncsrv::InferenceRequest request_;
  lipsyncsrv::InferenceResponse response_;
};

grpc::ServerBidiReactor<lipsyncsrv::InferenceRequest, lipsyncsrv::InferenceResponse>*
LipSyncSrvService::StreamInference(grpc::CallbackServerContext*) {
  if (gate_->closed())
    return new RefusedStream<lipsyncsrv::InferenceRequest, lipsyncsrv::InferenceResponse>();
  return new StreamReactor(this);
}

}  // namespace lipsync::server
