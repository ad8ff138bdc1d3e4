// The barrier at the entry of a thread that runs a caller's work: whatever the work throws
// becomes its error (a failed allocation RESOURCE_EXHAUSTED), so one request's or one batch's
// failure never ends the process.
#pragma once

#include <spdlog/spdlog.h>

#include <exception>
#include <new>
#include <string>

#include "lipsync/status.h"

namespace lipsync::runtime {

template <typename Work>
Status CatchAll(const char* where, Work&& work) {
  try {
    return work();
  } catch (const std::bad_alloc&) {
    spdlog::warn("{}: out of memory", where);
    return ResourceExhausted(std::string(where) + ": out of memory");
  } catch (const std::exception& e) {
    spdlog::error("{}: {}", where, e.what());
    return Internal(std::string(where) + " failed: " + e.what());
  } catch (...) {
    spdlog::error("{}: unknown exception", where);
    return Internal(std::string(where) + " failed");
  }
}

}  // namespace lipsync::runtime
