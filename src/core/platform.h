// The few things that differ between Linux and Windows, behind small portable functions: UTF-8
// paths, file mappings and new files, the running executable, environment, running other programs,
// stop requests, threads, CPU time, peak memory and loading a library. Everything else in lipsync
// is standard C++: only platform_posix.cc and platform_windows.cc call the operating system
// (tests/unit/posix_scan.py checks that no other file includes a POSIX-only header).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lipsync/status.h"

namespace lipsync::platform {

// lipsync passes paths as UTF-8 strings. On Windows a narrow string would be read in the ANSI code
// page, so every file is opened through the path these return.
std::filesystem::path PathFromUtf8(std::string_view utf8);
std::string PathToUtf8(const std::filesystem::path& path);

// The whole file at the UTF-8 `path`; `what` names it in errors ("model file 'x' does not
// exist"): NotFound when it is not a file that opens, DataLoss when reading fails.
Result<std::string> ReadWholeFile(const std::string& path, const std::string& what = "file");

// Memory aligned to `alignment` (a power of two; `bytes` a multiple of it); null when out of
// memory. Freed with AlignedFree (Windows' CRT has no std::aligned_alloc).
void* AlignedAlloc(size_t alignment, size_t bytes);
void AlignedFree(void* p);

// Whole pages from the system for one large block (aligned to at least 64 KiB), null when out of
// memory; FreePages (with the same `bytes`) gives them back at once. With `huge`, on Linux, the
// block is 2 MiB aligned and marked for transparent huge pages where the kernel offers them:
// touching fresh memory then faults 2 MiB at a time instead of 4 KiB (200 MiB touched afresh
// took 540 ms in small pages and 11-18 ms in huge ones on a 2-core machine), but a huge page is
// resident whole once any byte of it is touched.
void* AllocatePages(size_t bytes, bool huge);
void FreePages(void* p, size_t bytes);

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

// The separator of PATH-like variables (PYTHONPATH): ':' on POSIX, ';' on Windows.
#ifdef _WIN32
inline constexpr char kPathListSeparator = ';';
#else
inline constexpr char kPathListSeparator = ':';
#endif

// Runs argv[0] (looked up on PATH) with this process's environment plus `env` (which replaces
// variables of the same names), its standard output and error written to the file `log`, and
// waits for it. Returns its exit status, or Unavailable when it cannot be started.
Result<int> RunAndWait(const std::vector<std::string>& argv,
                       const std::vector<std::pair<std::string, std::string>>& env,
                       const std::string& log);

// The Python interpreter to run lipsync's Python tools with when none is named: on POSIX
// /usr/bin/python3 when it exists (Debian's, which has PyTorch; another python3 earlier on PATH may
// not), else python3 looked up on PATH; on Windows python (the python.org installer's name).
std::string DefaultPython();

// This process's id, for names of temporary files that other processes must not pick too.
int64_t ProcessId();

// Whether standard error is a terminal (progress lines go only there).
bool StderrIsTerminal();

// A new folder in the system's temporary folder, named `prefix` and a random suffix.
Result<std::string> MakeTempFolder(const std::string& prefix);

// A file created for writing where nothing, not even a link, has its name yet: an archive's
// entries never write through a link or over one another.
class NewFile {
 public:
  static Result<NewFile> Create(const std::string& path);
  NewFile() = default;
  NewFile(NewFile&& other) noexcept;
  NewFile& operator=(NewFile&& other) noexcept;
  NewFile(const NewFile&) = delete;
  NewFile& operator=(const NewFile&) = delete;
  ~NewFile();

  // Writes all of `data` (retrying short writes); the reason when it cannot.
  Status Write(const char* data, size_t size);

 private:
  void Close();
  intptr_t handle_ = -1;  // a file descriptor on POSIX, a HANDLE on Windows
};

// CPU time this process has used so far (user and system, all threads), in seconds.
double ProcessCpuSeconds();

// The physical cores this process may run on (at least 1).
int PhysicalCoreCount();

// Names the calling thread, as debuggers, profilers and top -H show it (at most 15 characters).
void NameThisThread(const char* name);

// Lowers the calling thread's priority by `nice` (1..19, as Linux's nice; on Windows, below
// normal or lowest). 0 leaves it as it is.
void LowerThisThreadPriority(int nice);

// Settings of the C library's heap for a process that allocates frames and messages of many
// megabytes on many threads, the server and its load clients (glibc: one arena, big blocks taken
// from and kept in the heap until ReturnFreeHeapMemory, never mapped afresh; nothing elsewhere).
void TuneHeapForLargeBuffers();

// Calls `on_request` with the request's name each time this process is asked to stop (SIGINT and
// SIGTERM on POSIX; Ctrl+C, Ctrl+Break, closing the console, logoff and shutdown on Windows), from
// a thread of its own, until destroyed; then the default handling returns. One at a time.
class ShutdownHook {
 public:
  static Result<std::unique_ptr<ShutdownHook>> Install(
      std::function<void(std::string_view name)> on_request);
  ~ShutdownHook();
  ShutdownHook(const ShutdownHook&) = delete;
  ShutdownHook& operator=(const ShutdownHook&) = delete;

 private:
  ShutdownHook() = default;
};

// Stop requests (as ShutdownHook's) queued for a thread to wait on.
class ShutdownRequests {
 public:
  static Result<std::unique_ptr<ShutdownRequests>> Catch();
  // The next request's name ("SIGTERM", "Ctrl+C"), waiting as long as it takes.
  std::string Wait();
  // As Wait, but at most `timeout`; empty when none came.
  std::string WaitFor(std::chrono::milliseconds timeout);

 private:
  ShutdownRequests() = default;
  std::mutex mutex_;
  std::condition_variable arrived_;
  std::deque<std::string> requests_;
  std::unique_ptr<ShutdownHook> hook_;  // last: stops calling in before the queue goes
};

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
