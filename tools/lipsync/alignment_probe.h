// compare-servers' audio alignment probe: which output frame each server shows a sound at, so
// that a server whose frames lag the audio its clients send (the Go server's are 8 frames late
// past a recording's first 8 frames) is reported as such, not only as differing pixels.
#pragma once

#include <string>
#include <vector>

#include "lipsync/status.h"
#include "monolithic/monolithic.grpc.pb.h"

namespace lipsync::cli {

struct ProbeOptions {
  std::string model;
  int size = 320;       // the avatar's face size
  int start_frame = 8;  // output frames start_frame .. start_frame + 31
  int timeout_ms = 120000;
  uint64_t seed = 0;
};

struct ServerProbe {
  // Per output frame, how much it changes (mean absolute difference, 8-bit levels) when a 40 ms
  // tone is added at output frame kProbeToneFrame of otherwise silent audio.
  std::vector<double> profile;
};

constexpr int kProbeBatch = 32;
constexpr int kProbeToneFrame = 12;

// Two requests of kProbeBatch frames (the clients' chunk of (batch + 15) x 40 ms from 8 frames
// before start_frame): silence, and silence with the tone. Fails when a call fails.
Result<ServerProbe> ProbeAlignment(monolithic::MonolithicService::Stub& stub,
                                   const ProbeOptions& options, const std::string& who);

struct AlignmentResult {
  bool measured = false;  // false when either server's frames do not change with the audio
  int offset_frames = 0;  // the old server shows the tone this many frames after the new one
  double correlation = 0;
};

// The shift (within +-16 frames) that best lines the old server's profile up with the new one's.
AlignmentResult CompareProfiles(const std::vector<double>& old_profile,
                                const std::vector<double>& new_profile);

}  // namespace lipsync::cli
