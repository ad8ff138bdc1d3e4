// A loaded avatar's frames as the server keeps them (stream::FrameStore): read on every core at
// load, decoded or kept as compressed bytes.
#pragma once

#include <cstdint>

#include "lipsync/avatar.h"
#include "pipeline/stream/frame_store.h"

namespace lipsync::server {

// Every frame of `avatar`. Decoded: as BGR images, each with its face crop in `layout`. Encoded: an
// image folder's files as they are (each decoded once here, so that a bad file is refused at load
// and not in a session), a video's frames as PNG (lossless, so that both ways give the same
// pixels).
Result<stream::FrameStore> LoadAvatarFrames(const Avatar& avatar, stream::FrameStorage storage,
                                            const FaceLayout& layout);

// What LoadAvatarFrames will hold, before it runs: exact for decoded frames (and their crops in
// the manifest's model size) and an image folder's files; for a video's frames as PNG, their
// decoded size (PNG of a photograph is smaller).
int64_t ExpectedFrameBytes(const Avatar& avatar, stream::FrameStorage storage);

}  // namespace lipsync::server
