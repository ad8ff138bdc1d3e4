// POSIX side of platform.h (Linux).
#include <dlfcn.h>
#include <fcntl.h>
#include <malloc.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "core/platform.h"

namespace lipsync::platform {

std::filesystem::path PathFromUtf8(std::string_view utf8) { return std::filesystem::path(utf8); }

std::string PathToUtf8(const std::filesystem::path& path) { return path.string(); }

void* AlignedAlloc(size_t alignment, size_t bytes) { return std::aligned_alloc(alignment, bytes); }

void AlignedFree(void* p) { std::free(p); }

std::vector<std::string> Utf8Arguments(int argc, char** argv) {
  return std::vector<std::string>(argv, argv + argc);
}

Result<MappedFile> MappedFile::Open(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NotFound("cannot be opened: " + std::string(std::strerror(errno)));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    close(fd);
    return DataLoss("cannot be read: " + std::string(std::strerror(errno)));
  }
  MappedFile file;
  file.size_ = static_cast<size_t>(st.st_size);
  if (file.size_ > 0) {
    void* p = mmap(nullptr, file.size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      close(fd);
      return DataLoss("cannot be mapped: " + std::string(std::strerror(err)));
    }
    file.data_ = static_cast<const char*>(p);
  }
  close(fd);
  return file;
}

void MappedFile::Reset() {
  if (data_) munmap(const_cast<char*>(data_), size_);
  data_ = nullptr;
  size_ = 0;
}

std::string ExecutablePath() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? "" : p.string();
}

void SetEnv(const std::string& name, const std::string& value) {
  setenv(name.c_str(), value.c_str(), 1);
}

int RunInPlace(const std::vector<std::string>& argv_s) {
  std::vector<char*> argv;
  for (const auto& s : argv_s) argv.push_back(const_cast<char*>(s.c_str()));
  argv.push_back(nullptr);
  std::fflush(stdout);
  execvp(argv[0], argv.data());
  return 127;
}

std::string HostName() {
  char buf[256] = {};
  gethostname(buf, sizeof buf - 1);
  return buf;
}

void ReturnFreeHeapMemory() { malloc_trim(0); }

int64_t PeakResidentBytes() {
  rusage usage{};
  if (getrusage(RUSAGE_SELF, &usage) != 0) return 0;
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;  // Linux reports KiB
}

std::string LibraryLoadProblem(const std::string& path) {
  void* handle = dlopen(path.c_str(), RTLD_LAZY | RTLD_LOCAL);
  if (!handle) {
    const char* err = dlerror();
    return err ? err : "cannot be loaded";
  }
  dlclose(handle);
  return "";
}

std::string FolderOfLibraryWith(const void* address) {
  Dl_info info{};
  if (dladdr(address, &info) && info.dli_fname) {
    return std::filesystem::path(info.dli_fname).parent_path().string();
  }
  return "";
}

std::string Direct3D12DeviceProblem() { return "DirectX 12 exists on Windows only"; }

std::string SharedLibraryName(const std::string& name) { return "lib" + name + ".so"; }

}  // namespace lipsync::platform
