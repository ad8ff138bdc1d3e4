#include "lipsync/npy.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

namespace lipsync {
namespace {

std::string TempPath(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("lipsync_npy_" + name)).string();
}

TEST(Npy, RoundTripKeepsShapeTypeAndBytes) {
  for (Shape shape : {Shape{2, 3, 4}, Shape{7}, Shape{}}) {
    Tensor t(DataType::kFloat32, shape);
    for (int64_t i = 0; i < t.element_count(); ++i) t.data_as<float>()[i] = 0.5f * i - 3;
    const std::string path = TempPath("rt.npy");
    ASSERT_TRUE(SaveNpy(path, t.view()).ok());
    auto loaded = LoadNpy(path);
    ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
    EXPECT_EQ(loaded->shape(), shape);
    EXPECT_EQ(loaded->dtype(), DataType::kFloat32);
    EXPECT_EQ(std::memcmp(loaded->data(), t.data(), t.byte_size()), 0);
  }
}

TEST(Npy, TruncatedFileIsDataLossNamingTheFile) {
  Tensor t(DataType::kFloat32, {4, 4});
  const std::string path = TempPath("trunc.npy");
  ASSERT_TRUE(SaveNpy(path, t.view()).ok());
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 5);
  auto loaded = LoadNpy(path);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(loaded.status().message().find(path), std::string::npos);
  EXPECT_NE(loaded.status().message().find("truncated"), std::string::npos);
}

TEST(Npy, RejectsMissingGarbageAndUnsupportedTypes) {
  EXPECT_EQ(LoadNpy(TempPath("missing.npy")).status().code(), StatusCode::kNotFound);
  const std::string garbage = TempPath("garbage.npy");
  std::ofstream(garbage) << "this is not numpy";
  EXPECT_EQ(LoadNpy(garbage).status().code(), StatusCode::kDataLoss);

  const std::string f64 = TempPath("f64.npy");
  std::string header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }";
  header.append(128 - 10 - header.size() - 1, ' ');
  header += '\n';
  std::ofstream out(f64, std::ios::binary);
  out.write("\x93NUMPY\x01\x00", 8);
  const char len[2] = {static_cast<char>(header.size()), 0};
  out.write(len, 2);
  out << header << std::string(8, '\0');
  out.close();
  auto r = LoadNpy(f64);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("<f8"), std::string::npos);
}

}  // namespace
}  // namespace lipsync
