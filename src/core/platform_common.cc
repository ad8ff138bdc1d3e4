// The parts of platform.h that are the same everywhere.
#include <cstdio>
#include <fstream>
#include <iterator>
#include <random>

#include "core/platform.h"

namespace lipsync::platform {

MappedFile::MappedFile(MappedFile&& other) noexcept : data_(other.data_), size_(other.size_) {
  other.data_ = nullptr;
  other.size_ = 0;
}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    Reset();
    data_ = other.data_;
    size_ = other.size_;
    other.data_ = nullptr;
    other.size_ = 0;
  }
  return *this;
}

MappedFile::~MappedFile() { Reset(); }

NewFile::NewFile(NewFile&& other) noexcept : handle_(other.handle_) { other.handle_ = -1; }

NewFile& NewFile::operator=(NewFile&& other) noexcept {
  if (this != &other) {
    Close();
    handle_ = other.handle_;
    other.handle_ = -1;
  }
  return *this;
}

NewFile::~NewFile() { Close(); }

Result<std::string> ReadWholeFile(const std::string& path, const std::string& what) {
  const std::filesystem::path file = PathFromUtf8(path);
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec)) {
    return NotFound(what + " '" + path + "' does not exist");
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) return NotFound("cannot open " + what + " '" + path + "'");
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return DataLoss("error reading " + what + " '" + path + "'");
  return bytes;
}

Result<std::string> MakeTempFolder(const std::string& prefix) {
  std::error_code ec;
  const std::filesystem::path base = std::filesystem::temp_directory_path(ec);
  if (ec) return Unavailable("no temporary folder: " + ec.message());
  std::random_device seed;
  std::mt19937_64 random(seed());
  // create_directory is false when the name exists already: then another name.
  for (int attempt = 0; attempt < 100; ++attempt) {
    char suffix[17];
    std::snprintf(suffix, sizeof suffix, "%016llx", static_cast<unsigned long long>(random()));
    const std::filesystem::path dir = base / PathFromUtf8(prefix + suffix);
    if (std::filesystem::create_directory(dir, ec)) return PathToUtf8(dir);
    if (ec)
      return Unavailable("cannot create a folder in " + PathToUtf8(base) + ": " + ec.message());
  }
  return Unavailable("cannot find a free folder name in " + PathToUtf8(base));
}

Result<std::unique_ptr<ShutdownRequests>> ShutdownRequests::Catch() {
  std::unique_ptr<ShutdownRequests> requests(new ShutdownRequests());
  ShutdownRequests* self = requests.get();
  auto hook = ShutdownHook::Install([self](std::string_view name) {
    std::lock_guard<std::mutex> lock(self->mutex_);
    self->requests_.emplace_back(name);
    self->arrived_.notify_all();
  });
  if (!hook.ok()) return hook.status();
  requests->hook_ = std::move(*hook);
  return requests;
}

std::string ShutdownRequests::Wait() {
  std::unique_lock<std::mutex> lock(mutex_);
  arrived_.wait(lock, [this] { return !requests_.empty(); });
  std::string name = std::move(requests_.front());
  requests_.pop_front();
  return name;
}

std::string ShutdownRequests::WaitFor(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (!arrived_.wait_for(lock, timeout, [this] { return !requests_.empty(); })) return "";
  std::string name = std::move(requests_.front());
  requests_.pop_front();
  return name;
}

}  // namespace lipsync::platform
