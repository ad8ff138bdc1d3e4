// Audio files in the lean build (LIPSYNC_LEAN): none. FFmpeg and the libraries behind it are what
// the lean build leaves out; the features can still be computed from PCM the caller decoded.
#include "lipsync/audio.h"

namespace lipsync {

Result<std::vector<float>> DecodeAudioFile(const std::string& path, int sample_rate) {
  return Unimplemented("cannot decode '" + path +
                       "': this lean build reads no audio files (a full build decodes them)");
}

Result<std::vector<float>> ResampleAudio(const std::vector<float>& pcm, int from_rate,
                                         int to_rate) {
  return Unimplemented("this lean build cannot resample audio (a full build does)");
}

}  // namespace lipsync
