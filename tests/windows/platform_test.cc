// The portable platform functions on their own (under Wine in the Windows build).
#include "core/platform.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

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

}  // namespace
}  // namespace lipsync::platform
