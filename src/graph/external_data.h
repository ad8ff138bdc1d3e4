// ONNX external data: initializers whose bytes live in a file beside the model (what PyTorch's
// dynamo exporter writes as `model.onnx.data`). Locations are resolved against the model's folder
// and may not leave it: absolute paths, `..` and links that lead outside are refused before any
// such file is opened.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "lipsync/status.h"

namespace onnx {
class ModelProto;
class TensorProto;
}  // namespace onnx

namespace lipsync::graph {

// Where one tensor's bytes are: `location` relative to the model's folder, at `offset`, `length`
// bytes (-1: as many as the tensor's dims need).
struct ExternalDataRef {
  std::string location;
  int64_t offset = 0;
  int64_t length = -1;
};

// Reads the `external_data` entries of a tensor. DataLoss for a missing location or a malformed
// offset or length.
Result<ExternalDataRef> ReadExternalDataRef(const onnx::TensorProto& tensor);

// The file `location` names, inside `model_dir` (after following links). InvalidArgument for an
// absolute location, one with a `..` component, or one that leads out of the folder through a
// link; DataLoss when the file does not exist. Opens nothing.
Result<std::string> ResolveExternalDataPath(const std::string& model_dir,
                                            const std::string& location,
                                            const std::string& tensor_name);

// The external data files of one model, each mapped read-only once, however many tensors it holds.
class ExternalDataFiles {
 public:
  explicit ExternalDataFiles(std::string model_dir);
  ~ExternalDataFiles();
  ExternalDataFiles(const ExternalDataFiles&) = delete;
  ExternalDataFiles& operator=(const ExternalDataFiles&) = delete;

  // The `expected_bytes` bytes of `tensor_name`. DataLoss when the file is shorter than
  // offset + length or the length disagrees with the tensor's dims.
  Result<std::string_view> Read(const std::string& tensor_name, const ExternalDataRef& ref,
                                size_t expected_bytes);

 private:
  struct Mapping;
  std::string model_dir_;
  std::map<std::string, std::unique_ptr<Mapping>> files_;  // by resolved path
};

// Checks every external reference of `model` (location rules and file sizes) without reading
// tensor data, for runtimes that read the files themselves; `data_file_bytes`, when given,
// receives the size of the files referenced, and `data_paths` their resolved paths, sorted.
Status CheckExternalData(const onnx::ModelProto& model, const std::string& model_path,
                         int64_t* data_file_bytes = nullptr,
                         std::vector<std::string>* data_paths = nullptr);

// The external data files of the ONNX model whose file at `model_path` holds `model_bytes`, as
// CheckExternalData finds them (resolved, checked, sorted); empty when every tensor is inside the
// model file. DataLoss for bytes that are not an ONNX model.
Result<std::vector<std::string>> ExternalDataPaths(std::string_view model_bytes,
                                                   const std::string& model_path);

// The folder that holds `model_path` ("." for a bare file name).
std::string ModelFolder(const std::string& model_path);

}  // namespace lipsync::graph
