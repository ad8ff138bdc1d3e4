// Audio encoders shared between avatars. SyncTalk_2D's audio encoder is one pretrained network
// that every avatar folder carries a copy of; loaded once per avatar, its weights (and on a GPU its
// run contexts) were multiplied by the avatars loaded. Avatars whose encoder models hold the same
// bytes hold one engine, for as long as any of them holds it.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "lipsync/audio.h"
#include "lipsync/engine.h"

namespace lipsync::server {

// What identifies an ONNX model's contents: a SHA-256 over the model file and each external data
// file it names (with the name it is named by), and the bytes of those files together.
struct ModelFingerprint {
  std::string digest;  // hex
  int64_t bytes = 0;
};

// Reads the model and its external data files. NotFound / DataLoss naming the file that cannot
// be read or is not an ONNX model.
Result<ModelFingerprint> FingerprintModel(const std::string& onnx_path);

class SharedEncoders {
 public:
  // Every encoder is loaded with `options` (the avatars' engine options).
  explicit SharedEncoders(EngineOptions options) : options_(std::move(options)) {}

  // The encoder of a model with this fingerprint while any holder keeps it; else null.
  std::shared_ptr<AudioEncoder> Find(const ModelFingerprint& model) const;
  // Find's, or the encoder at `path` loaded now (and found by the next caller with its
  // fingerprint). Loads run on the caller's thread; two callers may load the same model at once,
  // and the second keeps its own copy.
  Result<std::shared_ptr<AudioEncoder>> Get(const ModelFingerprint& model, const std::string& path);

 private:
  EngineOptions options_;
  mutable std::mutex mu_;
  mutable std::map<std::string, std::weak_ptr<AudioEncoder>> encoders_;  // by digest
};

}  // namespace lipsync::server
