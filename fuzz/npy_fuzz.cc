// NumPy files as they come in clients' model packages (aud_ave.npy, face_bounds/<n>.npy): any
// bytes load as a tensor whose data matches its shape, or are refused with a short message.
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "fuzz_check.h"
#include "fuzz_input.h"
#include "lipsync/npy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = lipsync::fuzz::ScratchPath("in.npy");
  lipsync::fuzz::WriteBytes(path, data, size);
  auto tensor = lipsync::LoadNpy(path);
  std::filesystem::remove(path);
  lipsync::fuzz::CheckRefusal(tensor.status(), "LoadNpy");
  // Each element takes at least a byte of the file (float16 is widened as it loads).
  if (tensor.ok() && static_cast<size_t>(tensor->element_count()) > size) {
    lipsync::fuzz::Broken("LoadNpy", std::to_string(tensor->element_count()) + " elements from a " +
                                         std::to_string(size) + "-byte file");
  }
  return 0;
}
