#include "server/avatar_faces.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace lipsync::server {
namespace {

// One run of `run` faces (no more than the model takes) into `out`, [run,S,S,3].
Status RunOnce(LoadedAvatar& a, const uint8_t* faces, int64_t side, const float* audio, int64_t run,
               uint8_t* out) {
  Engine& unet = *a.unet;
  const int s = a.layout.inner_size;
  const Shape& declared = unet.info().inputs[a.roles.audio].shape;
  Shape audio_shape = {run};
  audio_shape.insert(audio_shape.end(), declared.begin() + 1, declared.end());
  FaceBatch batch;
  batch.faces = TensorView{DataType::kUInt8, {run, side, side, 3}, faces};
  batch.audio = TensorView{DataType::kFloat32, audio_shape, audio};
  return unet.RunFrames(batch, {DataType::kUInt8, {run, s, s, 3}, out});
}

}  // namespace

Status RunAvatarFaces(LoadedAvatar& a, const TensorView& faces, const TensorView& audio,
                      uint8_t* out) {
  const Engine& unet = *a.unet;
  const int64_t n = faces.shape[0];
  const int64_t side = faces.shape[1];
  const size_t face_bytes = static_cast<size_t>(side) * side * 3;
  const size_t audio_item = static_cast<size_t>(audio.shape[1] * audio.shape[2] * audio.shape[3]);
  const size_t out_bytes = static_cast<size_t>(a.layout.inner_size) * a.layout.inner_size * 3;
  const int64_t limit = std::max<int64_t>(1, unet.info().max_batch);
  const bool fixed = !unet.info().dynamic_batch;
  std::vector<uint8_t> pad_faces, pad_out;
  std::vector<float> pad_audio;
  for (int64_t off = 0; off < n; off += limit) {
    const int64_t count = std::min(limit, n - off);
    const uint8_t* f = faces.as<uint8_t>() + off * face_bytes;
    const float* au = audio.as<float>() + off * audio_item;
    uint8_t* o = out + off * out_bytes;
    if (!fixed || count == limit) {
      LIPSYNC_RETURN_IF_ERROR(RunOnce(a, f, side, au, count, o));
      continue;
    }
    // A fixed-batch model's short last run: padded with copies of its last frame.
    pad_faces.resize(limit * face_bytes);
    pad_audio.resize(limit * audio_item);
    pad_out.resize(limit * out_bytes);
    for (int64_t k = 0; k < limit; ++k) {
      const int64_t from = std::min(k, count - 1);
      std::memcpy(pad_faces.data() + k * face_bytes, f + from * face_bytes, face_bytes);
      std::memcpy(pad_audio.data() + k * audio_item, au + from * audio_item,
                  audio_item * sizeof(float));
    }
    LIPSYNC_RETURN_IF_ERROR(
        RunOnce(a, pad_faces.data(), side, pad_audio.data(), limit, pad_out.data()));
    std::memcpy(o, pad_out.data(), count * out_bytes);
  }
  return Status::Ok();
}

}  // namespace lipsync::server
