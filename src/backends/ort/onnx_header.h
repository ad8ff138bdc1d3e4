// Reads the few top-level fields of an ONNX ModelProto that ONNX Runtime does not report (opset,
// producer) straight from the protobuf wire format, without parsing the graph.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "lipsync/status.h"

namespace lipsync {

struct OnnxHeader {
  int64_t ir_version = 0;
  int64_t opset = 0;  // version of the default ("" or "ai.onnx") domain
  std::string producer_name;
  std::string producer_version;
};

// DataLoss if the bytes are not a well-formed ModelProto at the top level (e.g. truncated).
Result<OnnxHeader> ReadOnnxHeader(std::string_view bytes);

}  // namespace lipsync
