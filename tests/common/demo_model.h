// The demo model written by `python3 -m lipsync.demo` into the build's test data (the including
// target defines LIPSYNC_DEMO_MODEL); DEMO_MODEL overrides it.
#pragma once

#include <cstdlib>
#include <string>

namespace lipsync {
namespace test_plans {

inline std::string DemoModel() {
  const char* path = std::getenv("DEMO_MODEL");
  return path ? path : LIPSYNC_DEMO_MODEL;
}

}  // namespace test_plans
}  // namespace lipsync
