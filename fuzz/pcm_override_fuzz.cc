// lipsyncsrv's audio_override text: base64 PCM is decoded into finite samples and the Python
// server's window, a file name is left to the folder check, and anything else is refused with a
// short message.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "fuzz_check.h"
#include "server/protocols/lipsyncsrv_audio.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  if (!lipsync::server::IsPcmOverride(text)) return 0;
  auto pcm = lipsync::server::DecodePcmOverride(text);
  lipsync::fuzz::CheckRefusal(pcm.status(), "DecodePcmOverride");
  if (!pcm.ok()) return 0;
  for (float v : *pcm) {
    // int16 scaled by 1/32767, as the Python server reads it: -32768 is just below -1.
    if (!std::isfinite(v) || std::fabs(v) > 32768.0f / 32767.0f) {
      lipsync::fuzz::Broken("DecodePcmOverride",
                            "sample " + std::to_string(v) + " outside int16's range");
    }
  }
  lipsync::fuzz::CheckRefusal(lipsync::server::PythonPcmOverrideWindow(*pcm).status(),
                              "PythonPcmOverrideWindow");
  return 0;
}
