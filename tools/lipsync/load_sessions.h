// The load clients of `lipsync loadtest` beyond the LipSync and KServe inference APIs: live
// sessions (load_sessions.cc) and the two compatibility services (load_compat.cc).
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

namespace lipsync::cli {

struct SessionLoadArgs {
  std::vector<std::string> models;  // avatars; sessions are spread over them in turn
  int sessions_per_model = 1;
  std::string audio;    // the speech every session streams
  std::string encoder;  // the avatars' audio encoder: which chunk completes which frame
  int chunk_ms = 200;
  double keep_up_ms = 1000;  // a session keeps up while every frame comes within this
  std::string json_path;
};

// Runs the sessions to their end and prints the summary; exit code 0 when every session got all
// its frames.
int RunSessionLoad(const SessionLoadArgs& args, const std::shared_ptr<grpc::Channel>& channel);

// One call of a compatibility service, with the index of the call within its client (requests
// move through the avatar's frames as a client's would).
struct CompatCall {
  grpc::StatusCode code = grpc::StatusCode::OK;
  bool success = false;  // the service's own success flag
  int frames = 0;        // frames in the answer
  std::string error;     // the status's or the service's error message, when not answered
};

// Monolithic InferBatchComposite or lipsyncsrv GenerateBatchInference requests of `batch` frames,
// built as the users' clients build them, each batch inside the avatar's `frames`.
class CompatTarget {
 public:
  virtual ~CompatTarget() = default;
  virtual CompatCall Call(int client, int64_t index) = 0;
};

std::unique_ptr<CompatTarget> MakeMonolithicTarget(const std::shared_ptr<grpc::Channel>& channel,
                                                   const std::string& model, int batch, int frames,
                                                   int timeout_ms);
std::unique_ptr<CompatTarget> MakeLipsyncsrvTarget(const std::shared_ptr<grpc::Channel>& channel,
                                                   const std::string& model, int batch, int frames,
                                                   int timeout_ms);

}  // namespace lipsync::cli
