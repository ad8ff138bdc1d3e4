#include "graph/external_data.h"

#include <onnx/onnx_pb.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/platform.h"

namespace lipsync::graph {
namespace fs = std::filesystem;

namespace {

Result<int64_t> ParseByteCount(const std::string& value, const std::string& key,
                               const std::string& tensor) {
  if (value.empty() || value.size() > 18 ||
      value.find_first_not_of("0123456789") != std::string::npos) {
    return DataLoss("tensor '" + tensor + "': external data " + key + " '" + value +
                    "' is not a non-negative integer");
  }
  return static_cast<int64_t>(std::stoll(value));
}

// True when `inner` is `outer` or lies below it; both are canonical.
bool IsWithin(const fs::path& inner, const fs::path& outer) {
  auto o = outer.begin();
  auto i = inner.begin();
  for (; o != outer.end(); ++o, ++i) {
    if (i == inner.end() || *i != *o) return false;
  }
  return true;
}

Status DataFileError(const std::string& tensor, const std::string& path, const std::string& why) {
  return DataLoss("tensor '" + tensor + "': external data file '" + path + "' " + why);
}

}  // namespace

std::string ModelFolder(const std::string& model_path) {
  fs::path parent = platform::PathFromUtf8(model_path).parent_path();
  return parent.empty() ? std::string(".") : platform::PathToUtf8(parent);
}

Result<ExternalDataRef> ReadExternalDataRef(const onnx::TensorProto& tensor) {
  ExternalDataRef ref;
  bool has_location = false;
  for (const auto& entry : tensor.external_data()) {
    if (entry.key() == "location") {
      ref.location = entry.value();
      has_location = true;
    } else if (entry.key() == "offset") {
      LIPSYNC_ASSIGN_OR_RETURN(ref.offset, ParseByteCount(entry.value(), "offset", tensor.name()));
    } else if (entry.key() == "length") {
      LIPSYNC_ASSIGN_OR_RETURN(ref.length, ParseByteCount(entry.value(), "length", tensor.name()));
    }
    // "checksum" and unknown keys carry nothing needed to read the data.
  }
  if (!has_location || ref.location.empty()) {
    return DataLoss("tensor '" + tensor.name() +
                    "' keeps its data in an external file but names no location");
  }
  return ref;
}

Result<std::string> ResolveExternalDataPath(const std::string& model_dir,
                                            const std::string& location,
                                            const std::string& tensor_name) {
  const fs::path loc = platform::PathFromUtf8(location);
  const std::string refused =
      "tensor '" + tensor_name + "': external data location '" + location + "' ";
  if (loc.is_absolute() || loc.has_root_name() || loc.has_root_directory()) {
    return InvalidArgument(refused + "is an absolute path; it must be relative to the model's " +
                           "folder '" + model_dir + "' (refused, not opened)");
  }
  for (const auto& part : loc) {
    if (part == "..") {
      return InvalidArgument(refused + "climbs out of the model's folder '" + model_dir +
                             "' with '..' (refused, not opened)");
    }
  }
  std::error_code ec;
  const fs::path dir = fs::canonical(platform::PathFromUtf8(model_dir), ec);
  if (ec) return NotFound("model folder '" + model_dir + "' cannot be resolved: " + ec.message());
  // weakly_canonical follows every link that exists, so a link out of the folder shows here even
  // when its target is missing.
  const fs::path file = fs::weakly_canonical(dir / loc, ec);
  if (ec) return DataLoss(refused + "cannot be resolved: " + ec.message());
  if (!IsWithin(file, dir)) {
    return InvalidArgument(refused + "leads out of the model's folder '" +
                           platform::PathToUtf8(dir) + "' through a link (to '" +
                           platform::PathToUtf8(file) + "'; refused, not opened)");
  }
  if (!fs::exists(file, ec)) {
    return DataFileError(tensor_name, platform::PathToUtf8(dir / loc), "is missing");
  }
  if (!fs::is_regular_file(file, ec)) {
    return DataFileError(tensor_name, platform::PathToUtf8(dir / loc), "is not a regular file");
  }
  return platform::PathToUtf8(file);
}

struct ExternalDataFiles::Mapping {
  platform::MappedFile file;
};

ExternalDataFiles::ExternalDataFiles(std::string model_dir) : model_dir_(std::move(model_dir)) {}
ExternalDataFiles::~ExternalDataFiles() = default;

Result<std::string_view> ExternalDataFiles::Read(const std::string& tensor_name,
                                                 const ExternalDataRef& ref,
                                                 size_t expected_bytes) {
  LIPSYNC_ASSIGN_OR_RETURN(std::string path,
                           ResolveExternalDataPath(model_dir_, ref.location, tensor_name));
  auto it = files_.find(path);
  if (it == files_.end()) {
    auto mapping = std::make_unique<Mapping>();
    auto file = platform::MappedFile::Open(path);
    if (!file.ok()) return DataFileError(tensor_name, path, file.status().message());
    mapping->file = std::move(*file);
    it = files_.emplace(path, std::move(mapping)).first;
  }
  const platform::MappedFile& m = it->second->file;
  const int64_t length = ref.length < 0 ? static_cast<int64_t>(expected_bytes) : ref.length;
  if (static_cast<size_t>(length) != expected_bytes) {
    return DataLoss("tensor '" + tensor_name + "': external data length " + std::to_string(length) +
                    " bytes, its dims need " + std::to_string(expected_bytes));
  }
  if (static_cast<uint64_t>(ref.offset) > m.size() ||
      static_cast<uint64_t>(length) > m.size() - static_cast<uint64_t>(ref.offset)) {
    return DataFileError(tensor_name, path,
                         "holds " + std::to_string(m.size()) +
                             " bytes, but the tensor needs bytes " + std::to_string(ref.offset) +
                             ".." + std::to_string(ref.offset + length) + " (truncated file?)");
  }
  return std::string_view(m.data() + ref.offset, static_cast<size_t>(length));
}

Status CheckExternalData(const onnx::ModelProto& model, const std::string& model_path,
                         int64_t* data_file_bytes, std::vector<std::string>* data_paths) {
  const std::string dir = ModelFolder(model_path);
  std::map<std::string, uintmax_t> files;
  auto check = [&](const onnx::TensorProto& t) -> Status {
    if (t.data_location() != onnx::TensorProto::EXTERNAL) return Status::Ok();
    LIPSYNC_ASSIGN_OR_RETURN(ExternalDataRef ref, ReadExternalDataRef(t));
    LIPSYNC_ASSIGN_OR_RETURN(std::string path,
                             ResolveExternalDataPath(dir, ref.location, t.name()));
    std::error_code ec;
    const uintmax_t size = fs::file_size(platform::PathFromUtf8(path), ec);
    if (ec) return DataFileError(t.name(), path, "cannot be read: " + ec.message());
    const uint64_t end =
        static_cast<uint64_t>(ref.offset) + static_cast<uint64_t>(ref.length < 0 ? 0 : ref.length);
    if (static_cast<uint64_t>(ref.offset) > size || end > size) {
      return DataFileError(t.name(), path,
                           "holds " + std::to_string(size) + " bytes, but the tensor needs bytes " +
                               std::to_string(ref.offset) + ".." + std::to_string(end) +
                               " (truncated file?)");
    }
    files[path] = size;
    return Status::Ok();
  };
  for (const auto& t : model.graph().initializer()) LIPSYNC_RETURN_IF_ERROR(check(t));
  for (const auto& node : model.graph().node()) {
    for (const auto& a : node.attribute()) {
      if (a.has_t()) LIPSYNC_RETURN_IF_ERROR(check(a.t()));
    }
  }
  if (data_file_bytes) {
    *data_file_bytes = 0;
    for (const auto& [path, size] : files) *data_file_bytes += static_cast<int64_t>(size);
  }
  if (data_paths) {
    data_paths->clear();
    for (const auto& entry : files) data_paths->push_back(entry.first);
  }
  return Status::Ok();
}

Result<std::vector<std::string>> ExternalDataPaths(std::string_view model_bytes,
                                                   const std::string& model_path) {
  onnx::ModelProto proto;
  if (!proto.ParseFromArray(model_bytes.data(), static_cast<int>(model_bytes.size()))) {
    return DataLoss("'" + model_path + "' is not a valid ONNX model (protobuf parse failed)");
  }
  std::vector<std::string> paths;
  LIPSYNC_RETURN_IF_ERROR(CheckExternalData(proto, model_path, nullptr, &paths));
  return paths;
}

}  // namespace lipsync::graph
