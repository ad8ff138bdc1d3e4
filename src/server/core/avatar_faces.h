// Faces through an avatar's UNet for the avatar services (live sessions, the Go server's
// contract): BGR uint8 in, BGR uint8 out, on the device's scheduler with every other caller.
#pragma once

#include <cstdint>

#include "lipsync/tensor.h"
#include "server/core/avatar_registry.h"

namespace lipsync::server {

// Runs n faces through the avatar's UNet: `faces` uint8 [n,S,S,3] inner faces or [n,C,C,3] crops
// (the centre is used), `audio` float32 [n,32,16,16] windows; `out` receives n*S*S*3 bytes of new
// faces. The avatar's scheduler splits the frames into batches of the engine's limit (a
// fixed-batch model's last one padded with copies of the last frame) and may share a batch with
// other callers. Engine::RunFrames does the mask, scaling and conversion (every avatar UNet has
// the frame form, see FindUnetInputs): on the CPU as render does, on the GPU for the CUDA backend,
// so that 0.3 MB a face crosses to it instead of a 2.5 MB tensor. Frames not run by `deadline`
// are not run: kDeadlineExceeded.
Status RunAvatarFaces(
    LoadedAvatar& avatar, const TensorView& faces, const TensorView& audio, uint8_t* out,
    runtime::Origin origin = runtime::Origin::kTest,
    runtime::Priority priority = runtime::Priority::kOffline,
    runtime::SchedulerClock::time_point deadline = runtime::SchedulerClock::time_point::max());

}  // namespace lipsync::server
