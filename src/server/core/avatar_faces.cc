#include "server/core/avatar_faces.h"

namespace lipsync::server {

Status RunAvatarFaces(LoadedAvatar& a, const TensorView& faces, const TensorView& audio,
                      uint8_t* out, runtime::Origin origin, runtime::Priority priority,
                      runtime::SchedulerClock::time_point deadline) {
  if (!a.scheduler || !a.scheduled) {
    return FailedPrecondition("avatar '" + a.id + "' has no scheduler");
  }
  const int64_t n = faces.shape.empty() ? 0 : faces.shape[0];
  const int s = a.layout.inner_size;
  runtime::Job job;
  job.visual = faces;
  job.audio = audio;
  job.output = MutableTensorView{DataType::kUInt8, {n, s, s, 3}, out};
  job.origin = origin;
  job.priority = priority;
  job.deadline = deadline;
  return a.scheduler->Run(a.scheduled, std::move(job));
}

}  // namespace lipsync::server
