// Checks that an avatar's two models fit each other and the avatar.
#include "lipsync/avatar.h"

namespace lipsync {

Result<UnetInputs> FindUnetInputs(const ModelInfo& info) {
  const std::string where = "model '" + info.path + "'";
  // Exactly the frame form's interface (Engine::frame_form()), which the services run faces by.
  if (info.inputs.size() != 2 || info.outputs.size() != 1) {
    return InvalidArgument(where + ": expected a lip-sync UNet with 2 inputs (face, audio) and " +
                           "one output, it has " + std::to_string(info.inputs.size()) +
                           " inputs and " + std::to_string(info.outputs.size()) + " outputs");
  }
  UnetInputs roles;
  bool found = false;
  for (size_t v = 0; v < 2 && !found; ++v) {
    const Shape& s = info.inputs[v].shape;
    if (s.size() == 4 && s[1] == 6 && s[2] == s[3] && s[2] > 0) {
      roles = {v, 1 - v, static_cast<int>(s[2])};
      found = true;
    }
  }
  if (!found) {
    return InvalidArgument(where + ": neither input has the face shape [N,6,S,S]: " +
                           ShapeToString(info.inputs[0].shape) + ", " +
                           ShapeToString(info.inputs[1].shape));
  }
  LIPSYNC_RETURN_IF_ERROR(FaceLayout::ForInputSize(roles.size).status().WithContext(where));
  const TensorInfo& audio = info.inputs[roles.audio];
  if (audio.shape.size() != 4 ||
      Shape(audio.shape.begin() + 1, audio.shape.end()) != Shape{32, 16, 16}) {
    return InvalidArgument(where + ": audio input '" + audio.name + "' is " +
                           ShapeToString(audio.shape) +
                           "; rendering computes 'ave' audio windows [N,32,16,16]");
  }
  const TensorInfo& out = info.outputs[0];
  if (out.shape.size() != 4 || out.shape[1] != 3 || out.shape[2] != roles.size ||
      out.shape[3] != roles.size || out.dtype != DataType::kFloat32) {
    return InvalidArgument(where + ": output '" + out.name + "' is " + ShapeToString(out.shape) +
                           ", expected float32 [N,3," + std::to_string(roles.size) + "," +
                           std::to_string(roles.size) + "]");
  }
  if (info.inputs[roles.visual].dtype != DataType::kFloat32 || audio.dtype != DataType::kFloat32) {
    return InvalidArgument(where + ": inputs must be float32");
  }
  return roles;
}

Status CheckAudioEncoderInfo(const ModelInfo& info) {
  const std::string where = "audio encoder '" + info.path + "'";
  if (info.inputs.size() != 1 || info.inputs[0].shape.size() != 4 ||
      Shape(info.inputs[0].shape.begin() + 1, info.inputs[0].shape.end()) != Shape{1, 80, 16}) {
    return InvalidArgument(
        where + ": expected one input of mel windows [N,1,80,16]" +
        (info.inputs.empty() ? std::string() : ", got " + ShapeToString(info.inputs[0].shape)));
  }
  if (info.outputs.empty() || info.outputs[0].shape.size() != 2 ||
      info.outputs[0].shape[1] != 512) {
    return InvalidArgument(
        where + ": expected an output of embeddings [N,512]" +
        (info.outputs.empty() ? std::string() : ", got " + ShapeToString(info.outputs[0].shape)));
  }
  return Status::Ok();
}

Status CheckAvatarModels(const Avatar& avatar, const EngineOptions& options) {
  const std::string where = "avatar '" + avatar.dir() + "'";
  LIPSYNC_ASSIGN_OR_RETURN(auto unet, Engine::Create(avatar.model_path(), options));
  auto roles = FindUnetInputs(unet->info());
  if (!roles.ok()) return roles.status().WithContext(where);
  if (roles->size != avatar.manifest().model_size) {
    return InvalidArgument(where + ": avatar.json says model_size " +
                           std::to_string(avatar.manifest().model_size) + ", the model takes " +
                           std::to_string(roles->size) + "x" + std::to_string(roles->size) +
                           " faces");
  }
  LIPSYNC_ASSIGN_OR_RETURN(auto encoder, Engine::Create(avatar.audio_encoder_path(), options));
  return CheckAudioEncoderInfo(encoder->info()).WithContext(where);
}

}  // namespace lipsync
