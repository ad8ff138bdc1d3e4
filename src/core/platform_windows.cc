// Windows side of platform.h. Strings are UTF-8 inside lipsync and UTF-16 at the Win32 API.
#include <windows.h>
// After windows.h:
#include <malloc.h>
#include <process.h>
#include <psapi.h>
#include <shellapi.h>

#include <cstdio>
#include <cstdlib>
#include <cwchar>

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

int RunInPlace(const std::vector<std::string>& argv) {
  std::wstring line;
  for (const auto& a : argv) line += (line.empty() ? L"" : L" ") + QuoteArgument(Widen(a));
  STARTUPINFOW si{};
  si.cb = sizeof(si);
  PROCESS_INFORMATION pi{};
  std::fflush(stdout);
  if (!CreateProcessW(nullptr, line.data(), nullptr, nullptr, TRUE, 0, nullptr, nullptr, &si,
                      &pi)) {
    return 127;
  }
  WaitForSingleObject(pi.hProcess, INFINITE);
  DWORD code = 1;
  GetExitCodeProcess(pi.hProcess, &code);
  CloseHandle(pi.hThread);
  CloseHandle(pi.hProcess);
  return static_cast<int>(code);
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
