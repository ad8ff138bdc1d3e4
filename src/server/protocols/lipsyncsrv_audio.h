// The lipsyncsrv service's audio windows: from a base64 PCM audio_override (what the Python
// server's JavaScript clients send) and from a per-frame feature sequence, each the lipsync way
// (model spec section 2) or, for side-by-side checks, the Python server's way.
//
// A PCM override, as that server reads it: an audio_override longer than 100 characters is base64
// of little-endian int16 PCM at 24 kHz (the clients' rate), each sample / 32767, padded with
// silence or cut to 15360 samples: 640 ms, 16 video frames, the frame to show being the clip's
// frame 8 (its clients send 8 frames before it, it and 7 after). That one window drives every
// frame id of the request.
#pragma once

#include <string>
#include <vector>

#include "lipsync/audio.h"

namespace lipsync::server {

constexpr size_t kPcmOverrideMinChars = 101;  // shorter ones name a file
constexpr int kPcmOverrideRate = 24000;
constexpr size_t kPcmOverrideSamples = 15360;  // 640 ms at 24 kHz

bool IsPcmOverride(const std::string& audio_override);

// The override's samples at 24 kHz (kPcmOverrideSamples of them). InvalidArgument for text that
// is not base64 (standard alphabet, padded; whitespace is skipped), an odd number of bytes or no
// samples; the message gives sizes and positions, never the text.
Result<std::vector<float>> DecodePcmOverride(const std::string& text);

// lipsync: the window [1, 32, 16, 16] of the clip's frame 8, computed from the clip resampled to
// 16 kHz as for a whole signal.
Result<Tensor> PcmOverrideWindow(AudioEncoder& encoder, const std::vector<float>& pcm_24k);

// The Python server: the log-mel of the 24 kHz samples taken as 16 kHz (no resampling), its middle
// 16 mel frames, the first 32 mel bands of each, every value repeated 16 times along the last
// axis: window[c][t][k] = mel[c][start + t]. No audio encoder is involved.
Result<Tensor> PythonPcmOverrideWindow(const std::vector<float>& pcm_24k);

// The Python server's window of frame f from a sequence [rows, 512] (a package's aud_ave.npy):
// row f alone, as [32, 16], each value repeated 16 times along the last axis. InvalidArgument
// for a frame past the sequence's end. (lipsync reads rows f - 8 .. f + 7:
// AudioWindowsFromSequence.)
Result<Tensor> PythonSequenceWindows(const Tensor& sequence, const std::vector<int64_t>& frames);

}  // namespace lipsync::server
