// Where the compatibility services deliberately answer differently from the old servers they
// replace (docs/API.md lists each case), an option switches that one case back to the old
// server's behaviour, so that a migration can compare the two side by side (A/B).
#pragma once

#include <string>

#include "lipsync/status.h"

namespace lipsync::server {

enum class Behaviour {
  kLipsync,  // what lipsync does by default: the model spec's semantics
  kOld,      // what the old server did
};

// "lipsync" or `old_name` (e.g. "go", "python") for the option `flag`.
inline Result<Behaviour> ParseBehaviour(const std::string& value, const std::string& old_name,
                                        const std::string& flag) {
  if (value == "lipsync") return Behaviour::kLipsync;
  if (value == old_name) return Behaviour::kOld;
  return InvalidArgument(flag + " must be lipsync or " + old_name + ", got '" + value + "'");
}

}  // namespace lipsync::server
