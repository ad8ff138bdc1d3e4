// The portable platform functions on their own (under Wine in the Windows build).
#include "core/platform.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#ifndef _WIN32
#include <signal.h>
#endif

#include "lipsync/npy.h"

namespace lipsync::platform {
namespace {

// A folder with a space and characters outside any ANSI code page in its name.
std::filesystem::path ScratchDir() {
  auto dir = std::filesystem::temp_directory_path() /
             PathFromUtf8("lipsync platform \xc3\xa9\xe6\x97\xa5\xe6\x9c\xac");
  std::filesystem::create_directories(dir);
  return dir;
}

TEST(Platform, Utf8PathsRoundTrip) {
  const std::string name = "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac.bin";
  EXPECT_EQ(PathToUtf8(PathFromUtf8(name)), name);
  EXPECT_EQ(PathToUtf8(PathFromUtf8(name).filename()), name);
}

TEST(Platform, MapsAFileByItsUtf8Name) {
  const std::string path = PathToUtf8(ScratchDir() / PathFromUtf8("d\xc3\xa4ta.bin"));
  {
    std::ofstream out(PathFromUtf8(path), std::ios::binary);
    out << "0123456789";
  }
  auto file = MappedFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  ASSERT_EQ(file->size(), 10u);
  EXPECT_EQ(std::string(file->data(), file->size()), "0123456789");
  MappedFile moved = std::move(*file);
  EXPECT_EQ(moved.size(), 10u);
  EXPECT_EQ(file->data(), nullptr);
}

TEST(Platform, MissingFileIsNotFound) {
  auto file = MappedFile::Open(PathToUtf8(ScratchDir() / "no such file"));
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), StatusCode::kNotFound);
}

TEST(Platform, NpyByUtf8Name) {
  const std::string path = PathToUtf8(ScratchDir() / PathFromUtf8("\xd0\xbc\xd0\xb5\xd0\xbb.npy"));
  Tensor t(DataType::kFloat32, Shape{2, 3});
  for (int i = 0; i < 6; ++i) t.data_as<float>()[i] = static_cast<float>(i) * 0.5f;
  ASSERT_TRUE(SaveNpy(path, t.view()).ok());
  auto back = LoadNpy(path);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->shape(), t.shape());
  EXPECT_EQ(back->data_as<float>()[5], 2.5f);
}

TEST(Platform, ExecutableAndEnvironment) {
  const std::string exe = ExecutablePath();
  ASSERT_FALSE(exe.empty());
  EXPECT_TRUE(std::filesystem::exists(PathFromUtf8(exe)));
  SetEnv("LIPSYNC_PLATFORM_TEST", "\xc3\xa9t\xc3\xa9");
  const char* v = std::getenv("LIPSYNC_PLATFORM_TEST");
  ASSERT_NE(v, nullptr);
  EXPECT_GT(PeakResidentBytes(), 0);
}

TEST(Platform, LibraryLoadProblemNamesTheFailure) {
#ifdef _WIN32
  EXPECT_EQ(LibraryLoadProblem(SharedLibraryName("onnxruntime")), "");  // beside the executable
#endif
  EXPECT_NE(LibraryLoadProblem(SharedLibraryName("no_such_library_lipsync")), "");
}

TEST(Platform, NewFileNeverOverwrites) {
  const std::string path = PathToUtf8(ScratchDir() / PathFromUtf8("n\xc3\xa9w.bin"));
  std::filesystem::remove(PathFromUtf8(path));
  {
    auto file = NewFile::Create(path);
    ASSERT_TRUE(file.ok()) << file.status().ToString();
    ASSERT_TRUE(file->Write("abc", 3).ok());
    NewFile moved = std::move(*file);
    ASSERT_TRUE(moved.Write("de", 2).ok());
  }
  std::ifstream in(PathFromUtf8(path), std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str(), "abcde");
  auto again = NewFile::Create(path);
  EXPECT_FALSE(again.ok()) << "a second NewFile over an existing file";
#ifndef _WIN32  // (a link needs a privilege on Windows)
  const auto target = ScratchDir() / "link target";
  const auto link = ScratchDir() / "link";
  std::filesystem::remove(target);
  std::filesystem::remove(link);
  std::filesystem::create_symlink(target, link);
  EXPECT_FALSE(NewFile::Create(PathToUtf8(link)).ok()) << "wrote through a dangling link";
  EXPECT_FALSE(std::filesystem::exists(target));
#endif
}

TEST(Platform, PagesAreAlignedWritableAndGivenBack) {
  for (const bool huge : {false, true}) {
    const size_t bytes = (size_t{5} << 20) + 100;
    auto* block = static_cast<unsigned char*>(platform::AllocatePages(bytes, huge));
    ASSERT_NE(block, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(block) % (64 * 1024), 0u);
    EXPECT_EQ(block[0], 0);  // fresh pages come zeroed
    block[0] = 1;
    block[bytes - 1] = 2;
    EXPECT_EQ(block[0] + block[bytes - 1], 3);
    platform::FreePages(block, bytes);
  }
}

TEST(Platform, TempFoldersAreNewAndDistinct) {
  auto a = MakeTempFolder("lipsync_platform_test_");
  auto b = MakeTempFolder("lipsync_platform_test_");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_NE(*a, *b);
  for (const std::string& dir : {*a, *b}) {
    EXPECT_TRUE(std::filesystem::is_directory(PathFromUtf8(dir)));
    EXPECT_EQ(PathToUtf8(PathFromUtf8(dir).filename()).rfind("lipsync_platform_test_", 0), 0u);
    std::filesystem::remove(PathFromUtf8(dir));
  }
}

TEST(Platform, RunAndWaitGivesExitStatusOutputAndEnvironment) {
  const std::string log = PathToUtf8(ScratchDir() / "run log.txt");
#ifdef _WIN32
  const std::vector<std::string> argv = {"cmd", "/c", "echo %LIPSYNC_RUN_TEST%& exit 3"};
#else
  const std::vector<std::string> argv = {"/bin/sh", "-c", "echo $LIPSYNC_RUN_TEST; exit 3"};
#endif
  auto code = RunAndWait(argv, {{"LIPSYNC_RUN_TEST", "from the parent"}}, log);
  ASSERT_TRUE(code.ok()) << code.status().ToString();
  EXPECT_EQ(*code, 3);
  std::ifstream in(PathFromUtf8(log), std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_NE(text.str().find("from the parent"), std::string::npos) << text.str();
  auto missing = RunAndWait({"no_such_program_lipsync"}, {}, log);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kUnavailable);
}

// The interpreter the Python tools run with by default: python.org's name on Windows; elsewhere
// Debian's /usr/bin/python3 when present, else python3 from PATH, and it runs.
TEST(Platform, DefaultPython) {
  const std::string python = DefaultPython();
#ifdef _WIN32
  EXPECT_EQ(python, "python");
#else
  std::error_code ec;
  const bool debian = std::filesystem::is_regular_file("/usr/bin/python3", ec);
  EXPECT_EQ(python, debian ? "/usr/bin/python3" : "python3");
  const std::string log = PathToUtf8(ScratchDir() / "python log.txt");
  auto code = RunAndWait({python, "-c", "import sys; sys.exit(7)"}, {}, log);
  ASSERT_TRUE(code.ok()) << code.status().ToString();
  EXPECT_EQ(*code, 7);
  std::filesystem::remove(log);
#endif
}

TEST(Platform, ProcessFacts) {
  EXPECT_GT(ProcessId(), 0);
  EXPECT_GE(PhysicalCoreCount(), 1);
  if (std::thread::hardware_concurrency() > 0) {
    EXPECT_LE(PhysicalCoreCount(), static_cast<int>(std::thread::hardware_concurrency()));
  }
  // CPU time grows while this thread works (however loaded the machine, within a minute).
  const double before = ProcessCpuSeconds();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  volatile double sink = 0;
  while (ProcessCpuSeconds() <= before && std::chrono::steady_clock::now() < deadline) {
    for (int i = 0; i < 100000; ++i) sink = sink + i * 0.5;
  }
  EXPECT_GT(ProcessCpuSeconds(), before);
  NameThisThread("platform-test-long-name");
  LowerThisThreadPriority(0);
}

#ifndef _WIN32  // Windows' console events are not raised from inside a test under Wine
TEST(Platform, ShutdownRequestsArriveByName) {
  auto requests = ShutdownRequests::Catch();
  ASSERT_TRUE(requests.ok()) << requests.status().ToString();
  EXPECT_EQ(ShutdownHook::Install([](std::string_view) {}).status().code(),
            StatusCode::kFailedPrecondition);
  raise(SIGTERM);
  EXPECT_EQ((*requests)->WaitFor(std::chrono::seconds(60)), "SIGTERM");
  raise(SIGINT);
  EXPECT_EQ((*requests)->Wait(), "SIGINT");
  EXPECT_EQ((*requests)->WaitFor(std::chrono::milliseconds(1)), "");
  requests->reset();
  struct sigaction now {};
  sigaction(SIGTERM, nullptr, &now);
  EXPECT_EQ(now.sa_handler, SIG_DFL) << "the default handling is back";
  auto again = ShutdownRequests::Catch();
  EXPECT_TRUE(again.ok()) << "a second hook after the first is gone";
}
#endif

}  // namespace
}  // namespace lipsync::platform
