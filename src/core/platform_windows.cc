// Windows side of platform.h. Strings are UTF-8 inside lipsync and UTF-16 at the Win32 API.
#include <windows.h>
// After windows.h:
#include <io.h>
#include <malloc.h>
#include <process.h>
#include <psapi.h>
#include <shellapi.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cwchar>
#include <cwctype>

#include "core/platform.h"

namespace lipsync::platform {
namespace {

std::wstring Widen(std::string_view utf8) {
  if (utf8.empty()) return {};
  const int n =
      MultiByteToWideChar(CP_UTF8, 0, utf8.data(), static_cast<int>(utf8.size()), nullptr, 0);
  std::wstring out(static_cast<size_t>(n), L'\0');
  MultiByteToWideChar(CP_UTF8, 0, utf8.data(), static_cast<int>(utf8.size()), out.data(), n);
  return out;
}

std::string Narrow(std::wstring_view wide) {
  if (wide.empty()) return {};
  const int n = WideCharToMultiByte(CP_UTF8, 0, wide.data(), static_cast<int>(wide.size()), nullptr,
                                    0, nullptr, nullptr);
  std::string out(static_cast<size_t>(n), '\0');
  WideCharToMultiByte(CP_UTF8, 0, wide.data(), static_cast<int>(wide.size()), out.data(), n,
                      nullptr, nullptr);
  return out;
}

std::string LastError() {
  const DWORD code = GetLastError();
  wchar_t* text = nullptr;
  FormatMessageW(
      FORMAT_MESSAGE_ALLOCATE_BUFFER | FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS,
      nullptr, code, 0, reinterpret_cast<wchar_t*>(&text), 0, nullptr);
  std::string msg = text ? Narrow(text) : "Windows error " + std::to_string(code);
  if (text) LocalFree(text);
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == '\r' || msg.back() == ' ')) {
    msg.pop_back();
  }
  return msg;
}

// One argument quoted for CreateProcess's command line (the MSVC runtime's parsing rules).
std::wstring QuoteArgument(const std::wstring& arg) {
  if (!arg.empty() && arg.find_first_of(L" \t\n\v\"") == std::wstring::npos) return arg;
  std::wstring out = L"\"";
  size_t backslashes = 0;
  for (wchar_t c : arg) {
    if (c == L'\\') {
      ++backslashes;
      continue;
    }
    out.append(c == L'"' ? 2 * backslashes + 1 : backslashes, L'\\');
    backslashes = 0;
    out.push_back(c);
  }
  out.append(2 * backslashes, L'\\');
  out.push_back(L'"');
  return out;
}

}  // namespace

std::filesystem::path PathFromUtf8(std::string_view utf8) {
  return std::filesystem::path(Widen(utf8));
}

std::string PathToUtf8(const std::filesystem::path& path) { return Narrow(path.native()); }

void* AlignedAlloc(size_t alignment, size_t bytes) { return _aligned_malloc(bytes, alignment); }

void AlignedFree(void* p) { _aligned_free(p); }

// Large pages need a privilege users do not hold; plain committed pages, given back at once.
void* AllocatePages(size_t bytes, bool) {
  return VirtualAlloc(nullptr, bytes, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
}

void FreePages(void* p, size_t) {
  if (p) VirtualFree(p, 0, MEM_RELEASE);
}

std::vector<std::string> Utf8Arguments(int argc, char** argv) {
  int n = 0;
  wchar_t** wide = CommandLineToArgvW(GetCommandLineW(), &n);
  if (!wide) return std::vector<std::string>(argv, argv + argc);
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) out.push_back(Narrow(wide[i]));
  LocalFree(wide);
  return out;
}

Result<MappedFile> MappedFile::Open(const std::string& path) {
  HANDLE file = CreateFileW(Widen(path).c_str(), GENERIC_READ, FILE_SHARE_READ, nullptr,
                            OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, nullptr);
  if (file == INVALID_HANDLE_VALUE) return NotFound("cannot be opened: " + LastError());
  LARGE_INTEGER size{};
  if (!GetFileSizeEx(file, &size)) {
    const std::string why = LastError();
    CloseHandle(file);
    return DataLoss("cannot be read: " + why);
  }
  MappedFile out;
  out.size_ = static_cast<size_t>(size.QuadPart);
  if (out.size_ > 0) {
    HANDLE mapping = CreateFileMappingW(file, nullptr, PAGE_READONLY, 0, 0, nullptr);
    const void* view = mapping ? MapViewOfFile(mapping, FILE_MAP_READ, 0, 0, 0) : nullptr;
    const std::string why = view ? "" : LastError();
    // The view keeps the file mapped after both handles are closed.
    if (mapping) CloseHandle(mapping);
    CloseHandle(file);
    if (!view) return DataLoss("cannot be mapped: " + why);
    out.data_ = static_cast<const char*>(view);
  } else {
    CloseHandle(file);
  }
  return out;
}

void MappedFile::Reset() {
  if (data_) UnmapViewOfFile(data_);
  data_ = nullptr;
  size_ = 0;
}

std::string ExecutablePath() {
  std::wstring buf(MAX_PATH, L'\0');
  for (;;) {
    const DWORD n = GetModuleFileNameW(nullptr, buf.data(), static_cast<DWORD>(buf.size()));
    if (n == 0) return "";
    if (n < buf.size()) return Narrow(std::wstring_view(buf.data(), n));
    buf.resize(buf.size() * 2);
  }
}

void SetEnv(const std::string& name, const std::string& value) {
  _wputenv_s(Widen(name).c_str(), Widen(value).c_str());
}

std::string DefaultPython() { return "python"; }

namespace {

// Starts the command line and waits for it: its exit status, or why it could not start.
Result<int> StartAndWait(std::wstring line, void* environment, STARTUPINFOW& si) {
  si.cb = sizeof(si);
  PROCESS_INFORMATION pi{};
  if (!CreateProcessW(nullptr, line.data(), nullptr, nullptr, TRUE,
                      environment ? CREATE_UNICODE_ENVIRONMENT : 0, environment, nullptr, &si,
                      &pi)) {
    return Unavailable(LastError());
  }
  WaitForSingleObject(pi.hProcess, INFINITE);
  DWORD code = 1;
  GetExitCodeProcess(pi.hProcess, &code);
  CloseHandle(pi.hThread);
  CloseHandle(pi.hProcess);
  return static_cast<int>(code);
}

std::wstring CommandLine(const std::vector<std::string>& argv) {
  std::wstring line;
  for (const auto& a : argv) line += (line.empty() ? L"" : L" ") + QuoteArgument(Widen(a));
  return line;
}
}  // namespace

int RunInPlace(const std::vector<std::string>& argv) {
  STARTUPINFOW si{};
  std::fflush(stdout);
  auto code = StartAndWait(CommandLine(argv), nullptr, si);
  return code.ok() ? *code : 127;
}

Result<int> RunAndWait(const std::vector<std::string>& argv,
                       const std::vector<std::pair<std::string, std::string>>& env,
                       const std::string& log) {
  if (argv.empty()) return InvalidArgument("no program to run");
  // The environment block: this process's variables with `env`'s replacing those of the same
  // names (which Windows compares case-insensitively), sorted as CreateProcess expects.
  auto upper = [](std::wstring_view s) {
    std::wstring out(s);
    for (auto& c : out) c = static_cast<wchar_t>(std::towupper(c));
    return out;
  };
  std::vector<std::wstring> entries;
  if (wchar_t* block = GetEnvironmentStringsW()) {
    for (const wchar_t* e = block; *e; e += std::wcslen(e) + 1) {
      const std::wstring entry(e);
      const std::wstring name = upper(entry.substr(0, entry.find(L'=', 1)));
      const bool replaced = std::any_of(
          env.begin(), env.end(), [&](const auto& kv) { return upper(Widen(kv.first)) == name; });
      if (!replaced) entries.push_back(entry);
    }
    FreeEnvironmentStringsW(block);
  }
  for (const auto& [name, value] : env) entries.push_back(Widen(name) + L"=" + Widen(value));
  std::sort(entries.begin(), entries.end(),
            [&](const std::wstring& a, const std::wstring& b) { return upper(a) < upper(b); });
  std::wstring block;
  for (const auto& e : entries) block.append(e).push_back(L'\0');
  block.push_back(L'\0');

  SECURITY_ATTRIBUTES inherit{sizeof(SECURITY_ATTRIBUTES), nullptr, TRUE};
  HANDLE out = CreateFileW(Widen(log).c_str(), GENERIC_WRITE, FILE_SHARE_READ, &inherit,
                           CREATE_ALWAYS, FILE_ATTRIBUTE_NORMAL, nullptr);
  if (out == INVALID_HANDLE_VALUE) return Unavailable("cannot write '" + log + "': " + LastError());
  STARTUPINFOW si{};
  si.dwFlags = STARTF_USESTDHANDLES;
  si.hStdInput = GetStdHandle(STD_INPUT_HANDLE);
  si.hStdOutput = out;
  si.hStdError = out;
  auto code = StartAndWait(CommandLine(argv), block.data(), si);
  CloseHandle(out);
  if (!code.ok()) return Unavailable("cannot run '" + argv[0] + "': " + code.status().message());
  return code;
}

int64_t ProcessId() { return static_cast<int64_t>(GetCurrentProcessId()); }

bool StderrIsTerminal() { return _isatty(_fileno(stderr)) != 0; }

Result<NewFile> NewFile::Create(const std::string& path) {
  // CREATE_NEW fails where any file, a link included, has the name; a link is never followed.
  HANDLE h = CreateFileW(Widen(path).c_str(), GENERIC_WRITE, 0, nullptr, CREATE_NEW,
                         FILE_ATTRIBUTE_NORMAL | FILE_FLAG_OPEN_REPARSE_POINT, nullptr);
  if (h == INVALID_HANDLE_VALUE) return Unavailable(LastError());
  NewFile file;
  file.handle_ = reinterpret_cast<intptr_t>(h);
  return file;
}

Status NewFile::Write(const char* data, size_t size) {
  HANDLE h = reinterpret_cast<HANDLE>(handle_);
  for (size_t off = 0; off < size;) {
    const DWORD chunk = static_cast<DWORD>(std::min<size_t>(size - off, 1u << 30));
    DWORD written = 0;
    if (!WriteFile(h, data + off, chunk, &written, nullptr)) return Unavailable(LastError());
    off += written;
  }
  return Status::Ok();
}

void NewFile::Close() {
  if (handle_ != -1) CloseHandle(reinterpret_cast<HANDLE>(handle_));
  handle_ = -1;
}

double ProcessCpuSeconds() {
  FILETIME created, exited, kernel, user;
  if (!GetProcessTimes(GetCurrentProcess(), &created, &exited, &kernel, &user)) return 0;
  auto seconds = [](const FILETIME& t) {  // 100 ns units
    return 1e-7 *
           static_cast<double>((static_cast<uint64_t>(t.dwHighDateTime) << 32) | t.dwLowDateTime);
  };
  return seconds(kernel) + seconds(user);
}

int PhysicalCoreCount() {
  DWORD bytes = 0;
  GetLogicalProcessorInformationEx(RelationProcessorCore, nullptr, &bytes);
  std::vector<char> buffer(bytes);
  auto* info = reinterpret_cast<SYSTEM_LOGICAL_PROCESSOR_INFORMATION_EX*>(buffer.data());
  int cores = 0;
  if (bytes > 0 && GetLogicalProcessorInformationEx(RelationProcessorCore, info, &bytes)) {
    for (DWORD at = 0; at < bytes;) {
      auto* entry = reinterpret_cast<SYSTEM_LOGICAL_PROCESSOR_INFORMATION_EX*>(buffer.data() + at);
      ++cores;
      at += entry->Size;
    }
  }
  DWORD_PTR process_mask = 0, system_mask = 0;
  int allowed = 0;
  if (GetProcessAffinityMask(GetCurrentProcess(), &process_mask, &system_mask)) {
    for (; process_mask; process_mask &= process_mask - 1) ++allowed;
  }
  if (cores == 0) cores = allowed;
  if (allowed > 0) cores = std::min(cores, allowed);
  return std::max(1, cores);
}

void NameThisThread(const char* name) {
  // SetThreadDescription exists from Windows 10 1607 on: looked up, so older systems start too.
  using SetDescription = HRESULT(WINAPI*)(HANDLE, PCWSTR);
  static const auto set = reinterpret_cast<SetDescription>(reinterpret_cast<void*>(
      GetProcAddress(GetModuleHandleW(L"kernel32.dll"), "SetThreadDescription")));
  if (set) set(GetCurrentThread(), Widen(name).c_str());
}

void LowerThisThreadPriority(int nice) {
  if (nice <= 0) return;
  SetThreadPriority(GetCurrentThread(),
                    nice >= 10 ? THREAD_PRIORITY_LOWEST : THREAD_PRIORITY_BELOW_NORMAL);
}

void TuneHeapForLargeBuffers() {}  // the CRT's heap has no such settings

// Stop requests: Windows calls the console handler on a thread of its own, so it calls the hook
// directly.
namespace {

// Held while the hook runs, so that it is not removed under a running call.
std::mutex g_hook_mutex;
std::function<void(std::string_view)>* g_on_request = nullptr;

BOOL WINAPI OnConsoleControl(DWORD event) {
  std::lock_guard<std::mutex> lock(g_hook_mutex);
  const char* name = event == CTRL_C_EVENT       ? "Ctrl+C"
                     : event == CTRL_BREAK_EVENT ? "Ctrl+Break"
                     : event == CTRL_CLOSE_EVENT ? "console closed"
                                                 : "logoff or shutdown";
  if (!g_on_request) return FALSE;
  (*g_on_request)(name);
  return TRUE;
}

}  // namespace

Result<std::unique_ptr<ShutdownHook>> ShutdownHook::Install(
    std::function<void(std::string_view name)> on_request) {
  std::lock_guard<std::mutex> lock(g_hook_mutex);
  if (g_on_request) return FailedPrecondition("a shutdown hook is installed already");
  g_on_request = new std::function<void(std::string_view)>(std::move(on_request));
  if (!SetConsoleCtrlHandler(OnConsoleControl, TRUE)) {
    const std::string why = LastError();
    delete g_on_request;
    g_on_request = nullptr;
    return Unavailable("cannot catch stop requests: " + why);
  }
  return std::unique_ptr<ShutdownHook>(new ShutdownHook());
}

ShutdownHook::~ShutdownHook() {
  SetConsoleCtrlHandler(OnConsoleControl, FALSE);
  std::lock_guard<std::mutex> lock(g_hook_mutex);
  delete g_on_request;
  g_on_request = nullptr;
}

std::string HostName() {
  wchar_t buf[MAX_COMPUTERNAME_LENGTH + 1] = {};
  DWORD n = MAX_COMPUTERNAME_LENGTH + 1;
  return GetComputerNameW(buf, &n) ? Narrow(std::wstring_view(buf, n)) : "";
}

void ReturnFreeHeapMemory() { _heapmin(); }

int64_t PeakResidentBytes() {
  PROCESS_MEMORY_COUNTERS pmc{};
  if (!GetProcessMemoryInfo(GetCurrentProcess(), &pmc, sizeof(pmc))) return 0;
  return static_cast<int64_t>(pmc.PeakWorkingSetSize);
}

std::string LibraryLoadProblem(const std::string& path) {
  HMODULE module = LoadLibraryW(Widen(path).c_str());
  if (!module) return LastError();
  FreeLibrary(module);
  return "";
}

std::string FolderOfLibraryWith(const void* address) {
  HMODULE module = nullptr;
  if (!GetModuleHandleExW(
          GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
          static_cast<LPCWSTR>(address), &module)) {
    return "";
  }
  std::wstring buf(32768, L'\0');
  const DWORD n = GetModuleFileNameW(module, buf.data(), static_cast<DWORD>(buf.size()));
  if (n == 0) return "";
  return PathToUtf8(std::filesystem::path(buf.substr(0, n)).parent_path());
}

std::string Direct3D12DeviceProblem() {
  // Loaded at run time, so that lipsync.exe starts where d3d12.dll is missing.
  HMODULE d3d12 = LoadLibraryW(L"d3d12.dll");
  if (!d3d12) return "d3d12.dll does not load: " + LastError();
  using CreateDevice = HRESULT(WINAPI*)(IUnknown*, int, REFIID, void**);
  auto create = reinterpret_cast<CreateDevice>(
      reinterpret_cast<void*>(GetProcAddress(d3d12, "D3D12CreateDevice")));
  if (!create) return "d3d12.dll has no D3D12CreateDevice";
  // IID_ID3D12Device; a null device pointer only asks whether the default adapter supports
  // feature level 11_0 (0xb000), DirectML's minimum.
  static const GUID kDevice = {
      0x189819f1, 0x1db6, 0x4b57, {0xbe, 0x54, 0x18, 0x21, 0x33, 0x9b, 0x85, 0xf7}};
  const HRESULT hr = create(nullptr, 0xb000, kDevice, nullptr);
  if (FAILED(hr)) {
    char code[16];
    std::snprintf(code, sizeof code, "0x%08lx", static_cast<unsigned long>(hr));
    return std::string("no DirectX 12 device (D3D12CreateDevice failed with ") + code + ")";
  }
  return "";
}

std::string SharedLibraryName(const std::string& name) { return name + ".dll"; }

}  // namespace lipsync::platform
