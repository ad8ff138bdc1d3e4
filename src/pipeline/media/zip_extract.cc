#include "pipeline/media/zip_extract.h"

#include <zip.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <vector>

#include "core/platform.h"

namespace lipsync::internal {
namespace {

struct ZipCloser {
  void operator()(zip_t* z) const { zip_discard(z); }
};
struct ZipFileCloser {
  void operator()(zip_file_t* f) const { zip_fclose(f); }
};

std::string ErrorText(int code) {
  zip_error_t error;
  zip_error_init_with_code(&error, code);
  std::string text = zip_error_strerror(&error);
  zip_error_fini(&error);
  return text;
}

// Entry names can be anything the archive's writer chose: keep only names that stay inside.
Result<std::vector<std::string>> SafeParts(const std::string& name) {
  std::string path = name;
  for (char& c : path) c = c == '\\' ? '/' : c;  // some Windows tools write '\'
  if (path.empty() || path[0] == '/' || (path.size() > 1 && path[1] == ':')) {
    return InvalidArgument("entry '" + name.substr(0, 200) + "' has an absolute path");
  }
  std::vector<std::string> parts;
  size_t at = 0;
  while (at <= path.size()) {
    const size_t slash = std::min(path.find('/', at), path.size());
    const std::string part = path.substr(at, slash - at);
    if (part == "..") {
      return InvalidArgument("entry '" + name.substr(0, 200) +
                             "' leads out of the package folder ('..')");
    }
    if (!part.empty() && part != ".") parts.push_back(part);
    at = slash + 1;
  }
  return parts;
}

bool IsSymlink(zip_t* archive, zip_uint64_t index) {
  zip_uint8_t opsys = 0;
  zip_uint32_t attributes = 0;
  if (zip_file_get_external_attributes(archive, index, 0, &opsys, &attributes) != 0) return false;
  // A Unix archiver keeps the entry's st_mode in the high half; 0120000 is a symbolic link's type.
  constexpr zip_uint32_t kTypeMask = 0170000, kSymlink = 0120000;
  return opsys == ZIP_OPSYS_UNIX && ((attributes >> 16) & kTypeMask) == kSymlink;
}

// Creates the folders of `parts` below `dest` (not the last part when it is a file).
Status MakeFolders(const std::string& dest, const std::vector<std::string>& parts, size_t count,
                   const std::string& name) {
  std::string path = dest;
  for (size_t i = 0; i < count; ++i) {
    path += "/" + parts[i];
    const std::filesystem::path folder = platform::PathFromUtf8(path);
    std::error_code ec;
    std::filesystem::create_directory(folder, ec);  // an error too where a file has the name
    std::error_code status_ec;
    const auto status = std::filesystem::symlink_status(folder, status_ec);
    if (ec && !std::filesystem::exists(status)) {
      return Unavailable("cannot create folder '" + path + "' for entry '" + name +
                         "': " + ec.message());
    }
    // Not through a link: what is there must be a folder itself.
    if (!std::filesystem::is_directory(status)) {
      return InvalidArgument("entry '" + name + "' needs '" + parts[i] +
                             "' to be a folder, but the archive has a file of that name");
    }
  }
  return Status::Ok();
}

}  // namespace

bool LooksLikeZip(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  in.read(magic, 4);
  if (in.gcount() == 4 && magic[0] == 'P' && magic[1] == 'K' &&
      ((magic[2] == 3 && magic[3] == 4) || (magic[2] == 5 && magic[3] == 6))) {
    return true;
  }
  return path.size() > 4 && (path.compare(path.size() - 4, 4, ".zip") == 0 ||
                             path.compare(path.size() - 4, 4, ".ZIP") == 0);
}

Status ExtractZip(const std::string& zip_path, const std::string& dest, const ZipLimits& limits) {
  const std::string where = "zip archive '" + zip_path + "'";
  int code = 0;
  std::unique_ptr<zip_t, ZipCloser> archive(
      zip_open(zip_path.c_str(), ZIP_RDONLY | ZIP_CHECKCONS, &code));
  if (!archive) {
    if (code == ZIP_ER_NOENT || code == ZIP_ER_OPEN) return NotFound(where + " cannot be opened");
    return DataLoss(where + " is not a readable zip archive (" + ErrorText(code) + ")");
  }
  const zip_int64_t entries = zip_get_num_entries(archive.get(), 0);
  if (entries > limits.max_entries) {
    return ResourceExhausted(where + " holds " + std::to_string(entries) + " entries; at most " +
                             std::to_string(limits.max_entries) + " are unpacked");
  }
  // First every name, kind and declared size, so that a bad archive is refused before anything
  // is written.
  std::vector<std::vector<std::string>> parts(static_cast<size_t>(entries));
  std::vector<bool> is_dir(static_cast<size_t>(entries));
  std::set<std::string> seen;
  int64_t declared = 0;
  for (zip_int64_t i = 0; i < entries; ++i) {
    zip_stat_t st;
    if (zip_stat_index(archive.get(), static_cast<zip_uint64_t>(i), 0, &st) != 0 ||
        !(st.valid & ZIP_STAT_NAME)) {
      return DataLoss(where + ": entry " + std::to_string(i) + " cannot be read");
    }
    const std::string name = st.name;
    auto safe = SafeParts(name);
    if (!safe.ok()) return safe.status().WithContext(where);
    if (IsSymlink(archive.get(), static_cast<zip_uint64_t>(i))) {
      return InvalidArgument(where + ": entry '" + name + "' is a symbolic link");
    }
    if ((st.valid & ZIP_STAT_ENCRYPTION_METHOD) && st.encryption_method != ZIP_EM_NONE) {
      return InvalidArgument(where + ": entry '" + name + "' is encrypted");
    }
    const bool dir = !name.empty() && (name.back() == '/' || name.back() == '\\');
    std::string joined;
    for (const auto& p : *safe) joined += "/" + p;
    if (!dir && (safe->empty() || !seen.insert(joined).second)) {
      return InvalidArgument(where + ": entry '" + name + "' appears twice or names no file");
    }
    if (st.valid & ZIP_STAT_SIZE) {
      declared += static_cast<int64_t>(st.size);
      if (declared > limits.max_bytes) {
        return ResourceExhausted(where + " unpacks to more than " +
                                 std::to_string(limits.max_bytes >> 20) + " MiB");
      }
    }
    parts[static_cast<size_t>(i)] = std::move(*safe);
    is_dir[static_cast<size_t>(i)] = dir;
  }
  int64_t written = 0;
  std::vector<char> buffer(1 << 16);
  for (zip_int64_t i = 0; i < entries; ++i) {
    const auto& p = parts[static_cast<size_t>(i)];
    const std::string name = zip_get_name(archive.get(), static_cast<zip_uint64_t>(i), 0);
    if (is_dir[static_cast<size_t>(i)]) {
      LIPSYNC_RETURN_IF_ERROR(MakeFolders(dest, p, p.size(), name));
      continue;
    }
    LIPSYNC_RETURN_IF_ERROR(MakeFolders(dest, p, p.size() - 1, name));
    std::string path = dest;
    for (const auto& part : p) path += "/" + part;
    // Never through a link, never over another entry.
    auto out = platform::NewFile::Create(path);
    if (!out.ok()) {
      return InvalidArgument(where + ": entry '" + name + "' cannot be written (" +
                             out.status().message() + ")");
    }
    std::unique_ptr<zip_file_t, ZipFileCloser> in(
        zip_fopen_index(archive.get(), static_cast<zip_uint64_t>(i), 0));
    if (!in) {
      return DataLoss(where + ": entry '" + name +
                      "' cannot be read: " + zip_error_strerror(zip_get_error(archive.get())));
    }
    for (;;) {
      const zip_int64_t n = zip_fread(in.get(), buffer.data(), buffer.size());
      if (n < 0) {
        return DataLoss(where + ": entry '" + name +
                        "' is corrupt: " + zip_error_strerror(zip_file_get_error(in.get())));
      }
      if (n == 0) break;
      written += n;
      if (written > limits.max_bytes) {
        return ResourceExhausted(where + " unpacks to more than " +
                                 std::to_string(limits.max_bytes >> 20) +
                                 " MiB (stopped in entry '" + name + "')");
      }
      Status wrote = out->Write(buffer.data(), static_cast<size_t>(n));
      if (!wrote.ok()) return Unavailable("cannot write '" + path + "': " + wrote.message());
    }
  }
  return Status::Ok();
}

}  // namespace lipsync::internal
