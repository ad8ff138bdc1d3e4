// The few things that differ between Linux and Windows, behind small portable functions: UTF-8
// paths, read-only file mappings, the running executable, environment, running another program,
// peak memory and loading a library. Everything else in lipsync is standard C++.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "lipsync/status.h"

namespace lipsync::platform {

// lipsync passes paths as UTF-8 strings. On Windows a narrow string would be read in the ANSI code
// page, so every file is opened through the path these return.
std::filesystem::path PathFromUtf8(std::string_view utf8);
std::string PathToUtf8(const std::filesystem::path& path);

// Memory aligned to `alignment` (a power of two; `bytes` a multiple of it); null when out of
// memory. Freed with AlignedFree (Windows' CRT has no std::aligned_alloc).
void* AlignedAlloc(size_t alignment, size_t bytes);
void AlignedFree(void* p);

// The command-line arguments as UTF-8 (on Windows, from the wide command line; argv is in the ANSI
// code page there and loses characters outside it).
std::vector<std::string> Utf8Arguments(int argc, char** argv);

// A whole file mapped read-only, unmapped when destroyed.
class MappedFile {
 public:
  static Result<MappedFile> Open(const std::string& path);
  MappedFile() = default;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  const char* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  void Reset();
  const char* data_ = nullptr;
  size_t size_ = 0;
};

// The running executable's path; empty when unknown.
std::string ExecutablePath();

// Sets an environment variable for this process and the programs it starts.
void SetEnv(const std::string& name, const std::string& value);

// Runs argv[0] (looked up on PATH) with the arguments and returns its exit status; on POSIX the
// program replaces this process and this returns only when it cannot be started (status 127).
int RunInPlace(const std::vector<std::string>& argv);

// This machine's name; empty when unknown.
std::string HostName();

// The peak resident memory of this process in bytes (0 when unknown).
int64_t PeakResidentBytes();

// Hands the heap's free memory back to the system where the C library can (glibc's malloc_trim,
// the CRT's _heapmin), so that resident memory falls after a large batch.
void ReturnFreeHeapMemory();

// Empty when the shared library at `path` loads; else the loader's reason.
std::string LibraryLoadProblem(const std::string& path);

// The folder of the shared library (or executable) that holds `address`; empty when unknown.
std::string FolderOfLibraryWith(const void* address);

// Empty when a DirectX 12 device can be made (what DirectML runs on); else why not. Always a
// reason outside Windows.
std::string Direct3D12DeviceProblem();

// The platform's file names of shared libraries: "lib<name>.so" on Linux, "<name>.dll" on Windows.
std::string SharedLibraryName(const std::string& name);

}  // namespace lipsync::platform
