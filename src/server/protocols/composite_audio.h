// The monolithic service's audio: a CompositeBatchRequest's raw_audio or audio_features turned
// into the UNet's audio windows [batch, 32, 16, 16], one per output frame.
//
// Where raw_audio lies in time (lipsync's rule, docs/API.md). The Go server's clients cut the
// chunk from their recording starting at video frame max(0, start_frame_idx - 8), (batch + 15) x
// 40 ms long or shorter at the recording's end; its end-to-end test sends batch x 40 ms from frame
// 0. So the chunk's first sample is taken to be video frame start_frame_idx - lead with
// lead = min(8, start_frame_idx), and output frame i is the chunk's frame lead + i. The chunk's
// features are computed as for a whole signal that starts there. A chunk shorter than
// lead + batch + 7 frames of 640 samples (what the last output frame's window reaches) is
// completed with silence; samples past lead + batch + 11 frames change no window and are not used.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "lipsync/audio.h"
#include "monolithic/monolithic.pb.h"
#include "server/protocols/old_behaviour.h"

namespace lipsync::server {

constexpr int kCompositeAudioLead = 8;  // frames of context the clients send before frame 0
constexpr int kSamplesPerVideoFrame = kAudioSampleRate / 25;

// Frames of context before the first output frame: min(8, start_frame_idx).
int CompositeAudioLead(int start_frame_idx);
// Samples of a placed chunk: at least (lead + batch + 7) x 640, at most (lead + batch + 11) x 640.
size_t CompositeChunkMinSamples(int lead, int batch);
size_t CompositeChunkMaxSamples(int lead, int batch);

// The chunk on lipsync's time line: its first CompositeChunkMaxSamples samples at most, completed
// with silence to CompositeChunkMinSamples.
std::vector<float> PlaceCompositeChunk(const float* pcm, size_t samples, int lead, int batch);

// Windows of the output frames from a placed chunk, computed as for a whole signal (mel, encoder
// windows, embeddings, zero rows past its ends): output frame i is the chunk's video frame
// lead + i (model spec section 2).
Result<Tensor> CompositeAudioWindows(AudioEncoder& encoder, const float* pcm, size_t samples,
                                     int batch, int lead);

// The Go server's windows for the same chunk, as given (no placement): its mel frames T give
// min((T - 16) * 25 / 80, batch + 16) encoder windows (integer division), the embeddings e get the
// first and last repeated, and output frame i reads rows i - 8 .. i + 7 of that sequence (zeros
// outside) -- the window of the chunk's frame i, 8 frames before the frame its clients mean.
Result<Tensor> GoServerAudioWindows(AudioEncoder& encoder, const float* pcm, size_t samples,
                                    int batch);

// The request's audio input [batch, 32, 16, 16]: from raw_audio (float32 16 kHz PCM, or at
// sample_rate when set) placed as above, or by the Go server's rule with `align` kOld; else from
// audio_features (one float32 [32, 16, 16] window, used for every frame, as the Go server does).
// InvalidArgument names the field and what it should hold.
Result<Tensor> CompositeAudioInput(AudioEncoder& encoder,
                                   const monolithic::CompositeBatchRequest& request,
                                   Behaviour align);

}  // namespace lipsync::server
