// Work on every frame of a request or an avatar at once, on OpenCV's thread pool (the one the
// image operations already use, sized to the cores).
#pragma once

#include <algorithm>
#include <exception>
#include <functional>
#include <opencv2/core.hpp>
#include <string>
#include <utility>
#include <vector>

#include "lipsync/status.h"

namespace lipsync::server {

// Runs fn(0..count-1) on OpenCV's thread pool and returns the error of the first frame (in frame
// order) that failed, or OK: an exception thrown inside becomes that frame's error instead of
// leaving the pool. Every frame runs, whichever fail.
inline Status ForEachFrame(int count, const std::function<Status(int)>& fn) {
  std::vector<Status> statuses(static_cast<size_t>(std::max(count, 0)));
  cv::parallel_for_(cv::Range(0, count), [&](const cv::Range& range) {
    for (int i = range.start; i < range.end; ++i) {
      try {
        statuses[static_cast<size_t>(i)] = fn(i);
      } catch (const std::exception& e) {
        statuses[static_cast<size_t>(i)] =
            Internal(std::string("frame ") + std::to_string(i) + ": " + e.what());
      }
    }
  });
  for (Status& status : statuses) {
    if (!status.ok()) return std::move(status);
  }
  return Status::Ok();
}

}  // namespace lipsync::server
