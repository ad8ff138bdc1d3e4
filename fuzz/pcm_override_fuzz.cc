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
    if (!std::isfinite(v) || v < -1.0f || v > 1.0f) {
      std::fprintf(stderr, "DecodePcmOverride: sample %g outside [-1, 1]\n", v);
      std::abort();
    }
  }
  lipsync::fuzz::CheckRefusal(lipsync::server::PythonPcmOverrideWindow(*pcm).status(),
                              "PythonPcmOverrideWindow");
  return 0;
}
