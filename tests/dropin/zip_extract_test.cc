// ExtractZip on archives written here with libzip: a normal tree, and every refusal (paths that
// lead out, absolute paths, symbolic links, duplicates, too many entries, too many bytes, corrupt
// data), each with a clear error and nothing written outside the folder.
#include "pipeline/media/zip_extract.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <zip.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

namespace lipsync::internal {
namespace {

namespace fs = std::filesystem;

struct Scratch {
  fs::path dir;
  Scratch() {
    std::string pattern = (fs::temp_directory_path() / "lipsync_zip_test_XXXXXX").string();
    dir = mkdtemp(pattern.data());
  }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

struct Entry {
  std::string name;
  std::string data;
  bool symlink = false;
};

// Writes `entries` (deflated) to `path` with libzip.
void WriteZip(const fs::path& path, const std::vector<Entry>& entries) {
  int error = 0;
  zip_t* z = zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &error);
  ASSERT_NE(z, nullptr) << error;
  for (const auto& e : entries) {
    zip_source_t* src = zip_source_buffer(z, e.data.data(), e.data.size(), 0);
    ASSERT_NE(src, nullptr);
    const zip_int64_t index = zip_file_add(z, e.name.c_str(), src, ZIP_FL_ENC_UTF_8);
    ASSERT_GE(index, 0) << zip_strerror(z);
    if (e.symlink) {
      zip_file_set_external_attributes(z, static_cast<zip_uint64_t>(index), 0, ZIP_OPSYS_UNIX,
                                       static_cast<zip_uint32_t>(S_IFLNK | 0777) << 16);
    }
  }
  ASSERT_EQ(zip_close(z), 0);
}

std::string Read(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

Status Extract(Scratch& s, const std::vector<Entry>& entries, ZipLimits limits = {}) {
  WriteZip(s.dir / "a.zip", entries);
  fs::create_directory(s.dir / "out");
  return ExtractZip((s.dir / "a.zip").string(), (s.dir / "out").string(), limits);
}

TEST(ZipExtract, UnpacksFoldersAndFiles) {
  Scratch s;
  const std::string big(300000, 'x');
  ASSERT_TRUE(Extract(s, {{"package_info.json", "{}"},
                          {"models/", ""},
                          {"models/7.pth", big},
                          {"face_bounds\\0.npy", "b0"},  // a Windows tool's separator
                          {"./face_bounds/1.npy", "b1"}})
                  .ok());
  EXPECT_EQ(Read(s.dir / "out/package_info.json"), "{}");
  EXPECT_EQ(Read(s.dir / "out/models/7.pth"), big);
  EXPECT_EQ(Read(s.dir / "out/face_bounds/0.npy"), "b0");
  EXPECT_EQ(Read(s.dir / "out/face_bounds/1.npy"), "b1");
}

TEST(ZipExtract, RefusesNamesThatLeadOut) {
  for (const std::string name : {"../evil.txt", "a/../../evil.txt", "..\\evil.txt", "/tmp/evil.txt",
                                 "C:/evil.txt", "a/b/../../../evil.txt"}) {
    Scratch s;
    Status status = Extract(s, {{"fine.txt", "ok"}, {name, "x"}});
    ASSERT_FALSE(status.ok()) << name;
    EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << name;
    EXPECT_TRUE(status.message().find("leads out") != std::string::npos ||
                status.message().find("absolute path") != std::string::npos)
        << status.message();
    // Refused before anything is written.
    EXPECT_FALSE(fs::exists(s.dir / "out/fine.txt")) << name;
    EXPECT_FALSE(fs::exists(s.dir / "evil.txt")) << name;
  }
}

TEST(ZipExtract, RefusesLinksDuplicatesAndFileFolderClashes) {
  {
    Scratch s;
    Status status = Extract(s, {{"link", "/etc/passwd", true}});
    EXPECT_NE(status.message().find("symbolic link"), std::string::npos) << status.message();
    EXPECT_FALSE(fs::exists(s.dir / "out/link"));
  }
  {
    Scratch s;
    Status status = Extract(s, {{"a.txt", "1"}, {"./a.txt", "2"}});
    EXPECT_NE(status.message().find("appears twice"), std::string::npos) << status.message();
  }
  {
    Scratch s;
    Status status = Extract(s, {{"a", "file"}, {"a/b.txt", "x"}});
    ASSERT_FALSE(status.ok());
    EXPECT_NE(status.message().find("'a' to be a folder"), std::string::npos) << status.message();
  }
}

TEST(ZipExtract, HoldsSizesAndCountsToTheLimits) {
  {
    Scratch s;  // declared sizes already exceed the limit: nothing is written
    ZipLimits limits;
    limits.max_bytes = 1 << 20;
    Status status = Extract(s, {{"zeros.bin", std::string(4 << 20, '\0')}}, limits);
    EXPECT_EQ(status.code(), StatusCode::kResourceExhausted);
    EXPECT_NE(status.message().find("unpacks to more than 1 MiB"), std::string::npos)
        << status.message();
    EXPECT_FALSE(fs::exists(s.dir / "out/zeros.bin"));
  }
  {
    Scratch s;
    ZipLimits limits;
    limits.max_entries = 3;
    Status status = Extract(s, {{"1", "a"}, {"2", "b"}, {"3", "c"}, {"4", "d"}}, limits);
    EXPECT_EQ(status.code(), StatusCode::kResourceExhausted);
    EXPECT_NE(status.message().find("4 entries; at most 3"), std::string::npos) << status.message();
  }
}

// An archive that declares 1 byte for an entry that inflates to 4 MiB stops at the limit, or
// earlier at libzip's own size and checksum checks: either way a clear error, never the bytes.
TEST(ZipExtract, LyingSizesAreCaught) {
  Scratch s;
  WriteZip(s.dir / "a.zip", {{"zeros.bin", std::string(4 << 20, '\0')}});
  std::string bytes = Read(s.dir / "a.zip");
  for (const auto& [sig, offset] : std::vector<std::pair<std::string, size_t>>{
           {std::string("PK\x03\x04", 4), 22}, {std::string("PK\x01\x02", 4), 24}}) {
    for (size_t at = bytes.find(sig); at != std::string::npos; at = bytes.find(sig, at + 4)) {
      bytes[at + offset] = 1;
      bytes[at + offset + 1] = bytes[at + offset + 2] = bytes[at + offset + 3] = 0;
    }
  }
  std::ofstream(s.dir / "liar.zip", std::ios::binary) << bytes;
  fs::create_directory(s.dir / "out");
  ZipLimits limits;
  limits.max_bytes = 1 << 20;
  Status status = ExtractZip((s.dir / "liar.zip").string(), (s.dir / "out").string(), limits);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("zip archive"), std::string::npos) << status.message();
  std::error_code ec;
  EXPECT_LE(fs::exists(s.dir / "out/zeros.bin") ? fs::file_size(s.dir / "out/zeros.bin", ec) : 0,
            static_cast<uintmax_t>(limits.max_bytes));
}

TEST(ZipExtract, CorruptArchivesAreDataLoss) {
  Scratch s;
  WriteZip(s.dir / "good.zip", {{"a.bin", std::string(200000, 'a') + std::string(200000, 'b')}});
  const std::string good = Read(s.dir / "good.zip");
  std::ofstream(s.dir / "truncated.zip", std::ios::binary) << good.substr(0, good.size() / 2);
  std::string flipped = good;
  flipped[100] = static_cast<char>(flipped[100] ^ 0x5a);  // inside the deflated data
  std::ofstream(s.dir / "flipped.zip", std::ios::binary) << flipped;
  std::ofstream(s.dir / "garbage.zip", std::ios::binary) << std::string("PK\x03\x04", 4) + "rest";
  for (const char* name : {"truncated.zip", "flipped.zip", "garbage.zip"}) {
    const fs::path out = s.dir / (std::string(name) + ".out");
    fs::create_directory(out);
    Status status = ExtractZip((s.dir / name).string(), out.string(), {});
    ASSERT_FALSE(status.ok()) << name;
    EXPECT_EQ(status.code(), StatusCode::kDataLoss) << name << ": " << status.ToString();
    EXPECT_NE(status.message().find(name), std::string::npos) << status.message();
  }
  Status missing = ExtractZip((s.dir / "none.zip").string(), s.dir.string(), {});
  EXPECT_EQ(missing.code(), StatusCode::kNotFound);
  EXPECT_TRUE(LooksLikeZip((s.dir / "good.zip").string()));
  EXPECT_TRUE(LooksLikeZip((s.dir / "none.zip").string()));  // by its name
}

}  // namespace
}  // namespace lipsync::internal
