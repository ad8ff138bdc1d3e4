// POSIX side of platform.h (Linux).
#include <dlfcn.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <thread>

#include "core/platform.h"

namespace lipsync::platform {

std::filesystem::path PathFromUtf8(std::string_view utf8) { return std::filesystem::path(utf8); }

std::string PathToUtf8(const std::filesystem::path& path) { return path.string(); }

void* AlignedAlloc(size_t alignment, size_t bytes) { return std::aligned_alloc(alignment, bytes); }

void AlignedFree(void* p) { std::free(p); }

namespace {
constexpr size_t kHugePage = size_t{2} << 20;
size_t WholePages(size_t bytes) {
  static const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return (bytes + page - 1) / page * page;
}
}  // namespace

void* AllocatePages(size_t bytes, bool huge) {
  const size_t length = WholePages(bytes);
  // A huge page more than asked, then the ends cut off so that the block starts on a huge page.
  const size_t span = length + kHugePage;
  void* mapped = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mapped == MAP_FAILED) return nullptr;
  const auto raw = reinterpret_cast<uintptr_t>(mapped);
  const uintptr_t start = (raw + kHugePage - 1) / kHugePage * kHugePage;
  const size_t head = start - raw, tail = span - head - length;
  if (head > 0) munmap(mapped, head);
  if (tail > 0) munmap(reinterpret_cast<void*>(start + length), tail);
  void* block = reinterpret_cast<void*>(start);
  if (huge) madvise(block, length, MADV_HUGEPAGE);  // a hint: without them the block still works
  return block;
}

void FreePages(void* p, size_t bytes) {
  if (p) munmap(p, WholePages(bytes));
}

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

std::string DefaultPython() {
  std::error_code ec;
  return std::filesystem::is_regular_file("/usr/bin/python3", ec) ? "/usr/bin/python3" : "python3";
}

int RunInPlace(const std::vector<std::string>& argv_s) {
  std::vector<char*> argv;
  for (const auto& s : argv_s) argv.push_back(const_cast<char*>(s.c_str()));
  argv.push_back(nullptr);
  std::fflush(stdout);
  execvp(argv[0], argv.data());
  return 127;
}

Result<int> RunAndWait(const std::vector<std::string>& argv_s,
                       const std::vector<std::pair<std::string, std::string>>& env,
                       const std::string& log) {
  if (argv_s.empty()) return InvalidArgument("no program to run");
  std::vector<std::string> env_s;
  for (char** e = environ; e && *e; ++e) {
    const std::string entry(*e);
    const bool replaced = std::any_of(env.begin(), env.end(), [&](const auto& kv) {
      return entry.size() > kv.first.size() && entry.compare(0, kv.first.size(), kv.first) == 0 &&
             entry[kv.first.size()] == '=';
    });
    if (!replaced) env_s.push_back(entry);
  }
  for (const auto& [name, value] : env) env_s.push_back(name + "=" + value);
  auto pointers = [](const std::vector<std::string>& strings) {
    std::vector<char*> out;
    for (const auto& s : strings) out.push_back(const_cast<char*>(s.c_str()));
    out.push_back(nullptr);
    return out;
  };
  auto argv = pointers(argv_s);
  auto envp = pointers(env_s);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  // The child starts with no signal blocked, whatever the calling thread blocks.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  pid_t pid = 0;
  const int spawned = posix_spawnp(&pid, argv[0], &actions, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (spawned != 0) {
    return Unavailable("cannot run '" + argv_s[0] + "': " + std::strerror(spawned));
  }
  int wstatus = 0;
  while (waitpid(pid, &wstatus, 0) < 0) {
    if (errno != EINTR) return Internal("waiting for '" + argv_s[0] + "' failed");
  }
  if (WIFEXITED(wstatus)) return WEXITSTATUS(wstatus);
  return 128 + (WIFSIGNALED(wstatus) ? WTERMSIG(wstatus) : 0);  // as a shell reports it
}

int64_t ProcessId() { return static_cast<int64_t>(getpid()); }

bool StderrIsTerminal() { return isatty(STDERR_FILENO) == 1; }

Result<NewFile> NewFile::Create(const std::string& path) {
  // O_EXCL and O_NOFOLLOW: never through a link, never over another file.
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) return Unavailable(std::strerror(errno));
  NewFile file;
  file.handle_ = fd;
  return file;
}

Status NewFile::Write(const char* data, size_t size) {
  for (size_t off = 0; off < size;) {
    const ssize_t k = write(static_cast<int>(handle_), data + off, size - off);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) return Unavailable(std::strerror(errno));
    off += static_cast<size_t>(k);
  }
  return Status::Ok();
}

void NewFile::Close() {
  if (handle_ >= 0) close(static_cast<int>(handle_));
  handle_ = -1;
}

double ProcessCpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& t) { return t.tv_sec + 1e-6 * t.tv_usec; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

int PhysicalCoreCount() {
  // Distinct (package, core) ids in sysfs; hyper-threads of one core share them.
  std::set<std::pair<int, int>> cores;
  for (int cpu = 0;; ++cpu) {
    const std::string dir = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
    std::ifstream package_file(dir + "physical_package_id");
    std::ifstream core_file(dir + "core_id");
    int package = 0, core = 0;
    if (!(package_file >> package) || !(core_file >> core)) break;
    cores.insert({package, core});
  }
  int count = cores.empty() ? static_cast<int>(std::thread::hardware_concurrency())
                            : static_cast<int>(cores.size());
  cpu_set_t mask;
  if (sched_getaffinity(0, sizeof(mask), &mask) == 0) count = std::min(count, CPU_COUNT(&mask));
  return std::max(1, count);
}

void NameThisThread(const char* name) {
  char shortened[16] = {};  // Linux keeps 15 characters
  std::strncpy(shortened, name, sizeof shortened - 1);
  pthread_setname_np(pthread_self(), shortened);
}

void LowerThisThreadPriority(int nice) {
  // On Linux a thread's nice value is its own: set through its thread id.
  if (nice > 0) setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), std::min(nice, 19));
}

void TuneHeapForLargeBuffers() {
  // Frames are megabytes and are allocated on many gRPC threads; glibc's default of one malloc
  // arena per thread lets freed blocks pile up per thread, and resident memory creeps up under
  // steady load. One arena keeps it flat: with two, the second (an mmapped heap) kept between 0.7
  // and 25 MB resident after the idle trim, varying from run to run, while the main heap, which
  // malloc_trim shrinks well, stayed within 0.2 MB (tests/server/soak.sh). Small allocations
  // still come from each thread's cache, and large buffers from the working-memory pool.
  mallopt(M_ARENA_MAX, 1);
  // By default glibc maps big blocks afresh and hands freed memory back at once, so every frame's
  // buffers took hundreds of page faults (a large share of the per-request cost). Keep them in
  // the heap for the next request instead; ReturnFreeHeapMemory returns memory once the server
  // idles.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  // Blocks above that threshold (32 MiB, the most glibc takes) were still mapped afresh: the
  // monolithic service's batch of 25 float faces arrives as one 61 MiB string, which took a page
  // fault per 4 KiB on every request. Without mappings they come from the heap and are reused too.
  mallopt(M_MMAP_MAX, 0);
}

// Stop requests: the signal handler only writes the signal's number to a pipe (all it may safely
// do); a thread reads the pipe and calls the hook. A 0 byte ends that thread.
namespace {

std::atomic<int> g_shutdown_pipe{-1};

extern "C" void OnStopSignal(int sig) {
  const int saved = errno;
  const unsigned char byte = static_cast<unsigned char>(sig);
  const int fd = g_shutdown_pipe.load();
  if (fd >= 0 && write(fd, &byte, 1) < 0) {
  }
  errno = saved;
}

struct HookState {
  int fds[2] = {-1, -1};
  struct sigaction previous_int {};
  struct sigaction previous_term {};
  std::thread reader;
};
HookState* g_hook = nullptr;

}  // namespace

Result<std::unique_ptr<ShutdownHook>> ShutdownHook::Install(
    std::function<void(std::string_view name)> on_request) {
  if (g_hook) return FailedPrecondition("a shutdown hook is installed already");
  auto state = std::make_unique<HookState>();
  if (pipe2(state->fds, O_CLOEXEC) != 0) {
    return Unavailable(std::string("cannot make a pipe for stop signals: ") + std::strerror(errno));
  }
  const int read_fd = state->fds[0];
  state->reader = std::thread([read_fd, on_request = std::move(on_request)] {
    for (;;) {
      unsigned char byte = 0;
      const ssize_t n = read(read_fd, &byte, 1);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0 || byte == 0) return;
      on_request(byte == SIGINT ? "SIGINT" : byte == SIGTERM ? "SIGTERM" : "signal");
    }
  });
  g_shutdown_pipe = state->fds[1];
  struct sigaction action {};
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGINT, &action, &state->previous_int);
  sigaction(SIGTERM, &action, &state->previous_term);
  g_hook = state.release();
  return std::unique_ptr<ShutdownHook>(new ShutdownHook());
}

ShutdownHook::~ShutdownHook() {
  std::unique_ptr<HookState> state(g_hook);
  g_hook = nullptr;
  sigaction(SIGINT, &state->previous_int, nullptr);
  sigaction(SIGTERM, &state->previous_term, nullptr);
  const unsigned char stop = 0;
  while (write(state->fds[1], &stop, 1) < 0 && errno == EINTR) {
  }
  state->reader.join();
  g_shutdown_pipe = -1;
  close(state->fds[0]);
  close(state->fds[1]);
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
