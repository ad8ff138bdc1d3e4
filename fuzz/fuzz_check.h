// What every fuzz target asserts of a refusal: it names the problem (a message that is not empty)
// in a few lines, never with the input's bytes in it, and it is not an internal error (garbage in
// is the caller's mistake, not a bug below). A broken promise aborts, which libFuzzer and the
// corpus replay both report.
#pragma once

#include <cstdio>
#include <cstdlib>

#include "lipsync/status.h"

namespace lipsync::fuzz {

inline void CheckRefusal(const Status& status, const char* what) {
  if (status.ok()) return;
  const std::string& m = status.message();
  const char* broken = m.empty()                                ? "an empty message"
                       : m.size() > kMaxMessageBytes            ? "a message over 2 KiB"
                       : status.code() == StatusCode::kInternal ? "an internal error"
                                                                : nullptr;
  if (!broken) return;
  std::fprintf(stderr, "%s: %s: %.300s\n", what, broken, status.ToString().c_str());
  std::abort();
}

}  // namespace lipsync::fuzz
