#include "lipsync/npy.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace lipsync {
namespace {

std::string TempPath(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("lipsync_npy_" + name)).string();
}

// A version 2 .npy file (4-byte header length) with the header dict `dict` and `data_bytes` zero
// bytes of data.
std::string WriteNpy(const std::string& name, std::string dict, size_t data_bytes) {
  const std::string path = TempPath(name);
  dict.append((64 - (12 + dict.size() + 1) % 64) % 64, ' ');
  dict += '\n';
  std::ofstream out(path, std::ios::binary);
  out.write("\x93NUMPY\x02\x00", 8);
  const uint32_t len = static_cast<uint32_t>(dict.size());
  const char le[4] = {static_cast<char>(len), static_cast<char>(len >> 8),
                      static_cast<char>(len >> 16), static_cast<char>(len >> 24)};
  out.write(le, 4);
  out << dict << std::string(data_bytes, '\0');
  return path;
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

  auto r =
      LoadNpy(WriteNpy("f64.npy", "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", 8));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("<f8"), std::string::npos);
}

TEST(Npy, HeadersAreReadWithOrWithoutSpaces) {
  auto r =
      LoadNpy(WriteNpy("tight.npy", "{'descr':'<i4','fortran_order':False,'shape':(2,3)}", 24));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->shape(), (Shape{2, 3}));
  EXPECT_EQ(r->dtype(), DataType::kInt32);
  r = LoadNpy(WriteNpy("scalar.npy", "{'descr': '|u1', 'fortran_order': False, 'shape': (), }", 1));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->shape(), Shape{});
}

// A header's shape is held to the bytes the file has before anything is allocated for it (a
// package's aud_ave.npy comes from a client), and every refusal is short.
TEST(Npy, ShapesTheFileCannotHoldAreRefusedBeforeAllocating) {
  const auto Tuple = [](int n, const char* dim) {  // "(d,d,...,d,)"
    std::string dims = "(";
    for (int i = 0; i < n; ++i) dims.append(dim).append(",");
    return dims + ")";
  };
  struct Case {
    const char* name;
    std::string shape;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"huge", "(99999999999, 4)", "truncated data: expected 1599999999984 bytes"},
      {"overflow", "(4611686018427387904, 4)", "is too large"},
      {"too_many_digits", Tuple(1, "9999999999999999999999999999999999999999"), "is too large"},
      {"negative", "(-3, 4)", "is not a tuple of sizes"},
      {"dims", Tuple(65, "1"), "over 64 dimensions"},
      {"letters", "(3, x)", "is not a tuple of sizes"},
      {"unclosed", "(3, 4", "has no 'shape'"},
  };
  for (const auto& c : cases) {
    auto r = LoadNpy(
        WriteNpy(std::string(c.name) + ".npy",
                 "{'descr': '<f4', 'fortran_order': False, 'shape': " + c.shape + ", }", 16));
    ASSERT_FALSE(r.ok()) << c.name;
    EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << c.name;
    EXPECT_NE(r.status().message().find(c.message), std::string::npos)
        << c.name << ": " << r.status().message();
    EXPECT_LT(r.status().message().size(), 400u) << c.name;
  }
  // A dtype as long as the header may be is named in a few bytes.
  auto r =
      LoadNpy(WriteNpy("long_descr.npy", "{'descr': '" + std::string(100000, 'f') + "', }", 0));
  ASSERT_FALSE(r.ok());
  EXPECT_LT(r.status().message().size(), 400u);
  EXPECT_NE(r.status().message().find("(100000 bytes)"), std::string::npos) << r.status().message();
}

}  // namespace
}  // namespace lipsync
