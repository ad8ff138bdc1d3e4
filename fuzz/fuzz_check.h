// What every fuzz target asserts of a refusal: it names the problem (a message that is not empty)
// in a few lines, never with the input's bytes in it, and it is not an internal error (garbage in
// is the caller's mistake, not a bug below). A broken promise aborts, which libFuzzer and the
// corpus replay both report.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

#include "lipsync/status.h"

namespace lipsync::fuzz {

// Reports a broken promise of `where` (the function or target under test) and aborts.
[[noreturn]] inline void Broken(const char* where, const std::string& what) {
  std::fprintf(stderr, "%s: %s\n", where, what.c_str());
  std::abort();
}

inline void CheckRefusal(const Status& status, const char* what) {
  if (status.ok()) return;
  const std::string& m = status.message();
  const char* broken = m.empty()                                ? "an empty message"
                       : m.size() > kMaxMessageBytes            ? "a message over 2 KiB"
                       : status.code() == StatusCode::kInternal ? "an internal error"
                                                                : nullptr;
  if (!broken) return;
  Broken(what, std::string(broken) + ": " + status.ToString().substr(0, 300));
}

}  // namespace lipsync::fuzz
