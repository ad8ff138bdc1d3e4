#include "server/core/shared_encoders.h"

#include <openssl/evp.h>

#include <cstdio>
#include <fstream>
#include <vector>

#include "core/platform.h"
#include "graph/external_data.h"

namespace lipsync::server {
namespace {

struct DigestContext {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  ~DigestContext() { EVP_MD_CTX_free(ctx); }
};

// Feeds the file's bytes into the digest and adds their count to `bytes`.
Status HashFile(EVP_MD_CTX* ctx, const std::string& path, int64_t* bytes) {
  std::ifstream in(platform::PathFromUtf8(path), std::ios::binary);
  if (!in) return NotFound("cannot read '" + path + "'");
  std::vector<char> buffer(1 << 20);
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    const std::streamsize got = in.gcount();
    if (got > 0) {
      EVP_DigestUpdate(ctx, buffer.data(), static_cast<size_t>(got));
      *bytes += got;
    }
  }
  if (in.bad()) return DataLoss("reading '" + path + "' failed");
  return Status::Ok();
}

}  // namespace

Result<ModelFingerprint> FingerprintModel(const std::string& onnx_path) {
  DigestContext d;
  if (!d.ctx || EVP_DigestInit_ex(d.ctx, EVP_sha256(), nullptr) != 1) {
    return Internal("SHA-256 is not available");
  }
  ModelFingerprint out;
  // Read once: hashed, then parsed for the data files it names.
  LIPSYNC_ASSIGN_OR_RETURN(const std::string model,
                           platform::ReadWholeFile(onnx_path, "model file"));
  EVP_DigestUpdate(d.ctx, model.data(), model.size());
  out.bytes += static_cast<int64_t>(model.size());
  LIPSYNC_ASSIGN_OR_RETURN(std::vector<std::string> data_files,
                           graph::ExternalDataPaths(model, onnx_path));
  // The same model file beside other data files is another model; the names come from the model
  // file (hashed above), the contents are hashed here in the order of the resolved paths.
  for (const std::string& path : data_files) {
    const std::string name = platform::PathToUtf8(platform::PathFromUtf8(path).filename());
    EVP_DigestUpdate(d.ctx, name.data(), name.size() + 1);  // with its terminator: a separator
    LIPSYNC_RETURN_IF_ERROR(HashFile(d.ctx, path, &out.bytes));
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_DigestFinal_ex(d.ctx, digest, &length) != 1) return Internal("SHA-256 failed");
  out.digest.reserve(2 * length);
  for (unsigned int i = 0; i < length; ++i) {
    char hex[3];
    std::snprintf(hex, sizeof(hex), "%02x", digest[i]);
    out.digest += hex;
  }
  return out;
}

std::shared_ptr<AudioEncoder> SharedEncoders::Find(const ModelFingerprint& model) const {
  std::lock_guard lock(mu_);
  auto it = encoders_.find(model.digest);
  return it == encoders_.end() ? nullptr : it->second.lock();
}

Result<std::shared_ptr<AudioEncoder>> SharedEncoders::Get(const ModelFingerprint& model,
                                                          const std::string& path) {
  if (auto found = Find(model)) return found;
  LIPSYNC_ASSIGN_OR_RETURN(std::unique_ptr<AudioEncoder> loaded,
                           AudioEncoder::Create(path, options_));
  std::shared_ptr<AudioEncoder> encoder = std::move(loaded);
  std::lock_guard lock(mu_);
  std::weak_ptr<AudioEncoder>& slot = encoders_[model.digest];
  if (slot.expired()) slot = encoder;
  // Entries of encoders no one holds any more go as others come.
  for (auto it = encoders_.begin(); it != encoders_.end();) {
    it = it->second.expired() ? encoders_.erase(it) : std::next(it);
  }
  return encoder;
}

}  // namespace lipsync::server
