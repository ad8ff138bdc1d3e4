// Work on every frame of a request or an avatar at once, on OpenCV's thread pool (the one the
// image operations already use, sized to the cores).
#pragma once

#include <exception>
#include <functional>
#include <opencv2/core.hpp>
#include <string>
#include <vector>

#include "lipsync/status.h"

namespace lipsync::server {

// Runs fn(0..count-1) on OpenCV's thread pool and keeps each call's status in `statuses` (sized
// to count): an exception thrown inside becomes that frame's error instead of leaving the pool.
inline void ForEachFrame(int count, const std::function<Status(int)>& fn,
                         std::vector<Status>* statuses) {
  cv::parallel_for_(cv::Range(0, count), [&](const cv::Range& range) {
    for (int i = range.start; i < range.end; ++i) {
      try {
        (*statuses)[static_cast<size_t>(i)] = fn(i);
      } catch (const std::exception& e) {
        (*statuses)[static_cast<size_t>(i)] =
            Internal(std::string("frame ") + std::to_string(i) + ": " + e.what());
      }
    }
  });
}

}  // namespace lipsync::server
