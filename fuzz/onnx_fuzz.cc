// ONNX model bytes: parsed and compiled into a plan, or refused with a short message (a model is
// the users' own file, but a corrupt or odd one must not take the process down).
#include <cstdint>
#include <string>

#include "fuzz_check.h"
#include "graph/compiler.h"
#include "graph/onnx_import.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  auto model = lipsync::graph::ParseOnnxModel(bytes, "the input");
  lipsync::fuzz::CheckRefusal(model.status(), "ParseOnnxModel");
  if (!model.ok()) return 0;
  lipsync::fuzz::CheckRefusal(lipsync::graph::CompilePlan(*model).status(), "CompilePlan");
  return 0;
}
