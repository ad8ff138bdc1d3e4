// Image files through libpng and TurboJPEG against OpenCV's codecs, the independent reference:
// the same pixels from every kind of PNG and JPEG, the same JPEG bytes for the same quality.
#include <gtest/gtest.h>
#include <png.h>
#include <turbojpeg.h>

#include <csetjmp>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <random>

#include "lipsync/face.h"

namespace lipsync {
namespace {

// A smooth picture with noise, odd-sized so that 4:2:0 blocks do not divide it.
Image TestImage(int width = 101, int height = 67) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> noise(-20, 20);
  Image img{width, height, std::vector<uint8_t>(static_cast<size_t>(width) * height * 3)};
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      for (int c = 0; c < 3; ++c) {
        const int v = (x * 255 / width) * (c == 0) + (y * 255 / height) * (c == 1) +
                      ((x + y) * 2 % 256) * (c == 2) + noise(rng);
        img.bgr[(static_cast<size_t>(y) * width + x) * 3 + c] =
            static_cast<uint8_t>(std::clamp(v, 0, 255));
      }
    }
  }
  return img;
}

cv::Mat AsMat(const Image& img) {
  return cv::Mat(img.height, img.width, CV_8UC3, const_cast<uint8_t*>(img.bgr.data()));
}

std::string Bytes(const std::vector<uint8_t>& v) { return std::string(v.begin(), v.end()); }

std::string CvEncode(const std::string& ext, const cv::Mat& mat, std::vector<int> params = {}) {
  std::vector<uint8_t> out;
  EXPECT_TRUE(cv::imencode(ext, mat, out, params));
  return Bytes(out);
}

// Decodes `bytes` both ways and expects the same BGR pixels.
void ExpectSameAsOpenCv(const std::string& bytes, const std::string& label) {
  SCOPED_TRACE(label);
  const cv::Mat want = cv::imdecode(
      cv::Mat(1, static_cast<int>(bytes.size()), CV_8U, const_cast<char*>(bytes.data())),
      cv::IMREAD_COLOR);
  ASSERT_FALSE(want.empty()) << "OpenCV cannot decode the test image";
  auto got = DecodeImage(bytes, "test image");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_EQ(got->width, want.cols);
  ASSERT_EQ(got->height, want.rows);
  ASSERT_TRUE(want.isContinuous());
  const std::vector<uint8_t> want_bytes(want.data, want.data + want.total() * 3);
  EXPECT_EQ(got->bgr, want_bytes);
}

// A PNG written by libpng itself, for the kinds OpenCV does not write: palette (with tRNS),
// gray of 1, 2 and 4 bits, interlaced. `rows` holds the packed samples.
std::string RawPng(int w, int h, int color, int depth, bool interlaced,
                   const std::vector<uint8_t>& rows, size_t row_bytes, int palette_size = 0) {
  std::string out;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    return "";
  }
  png_set_write_fn(
      png, &out,
      [](png_structp p, png_bytep data, png_size_t n) {
        static_cast<std::string*>(png_get_io_ptr(p))->append(reinterpret_cast<char*>(data), n);
      },
      nullptr);
  png_set_IHDR(png, info, w, h, depth, color, interlaced ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_color palette[256];
  png_byte alpha[256];
  if (palette_size > 0) {
    for (int i = 0; i < palette_size; ++i) {
      palette[i] = {static_cast<png_byte>(i * 7), static_cast<png_byte>(255 - i),
                    static_cast<png_byte>(i * 3)};
      alpha[i] = static_cast<png_byte>(i * 11);
    }
    png_set_PLTE(png, info, palette, palette_size);
    png_set_tRNS(png, info, alpha, palette_size, nullptr);
  }
  png_write_info(png, info);
  std::vector<png_bytep> pointers(static_cast<size_t>(h));
  for (int y = 0; y < h; ++y) {
    pointers[static_cast<size_t>(y)] = const_cast<png_bytep>(rows.data() + y * row_bytes);
  }
  png_write_image(png, pointers.data());
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}

// `jpeg` with an EXIF segment (orientation `o`, byte order `big`) right after its start marker.
std::string WithExifOrientation(const std::string& jpeg, int o, bool big) {
  std::string tiff =
      big ? std::string("MM\0\x2a\0\0\0\x08", 8) : std::string("II\x2a\0\x08\0\0\0", 8);
  auto u16 = [&](int v) {
    return big ? std::string{static_cast<char>(v >> 8), static_cast<char>(v & 0xFF)}
               : std::string{static_cast<char>(v & 0xFF), static_cast<char>(v >> 8)};
  };
  tiff += u16(1);  // one entry
  tiff +=
      u16(0x0112) + u16(3) + (big ? std::string("\0\0\0\x01", 4) : std::string("\x01\0\0\0", 4));
  tiff += u16(o) + std::string(2, '\0');  // value, padded
  tiff += std::string(4, '\0');           // no next IFD
  const std::string payload = std::string("Exif\0\0", 6) + tiff;
  const size_t length = payload.size() + 2;
  const std::string segment = std::string("\xFF\xE1", 2) + static_cast<char>(length >> 8) +
                              static_cast<char>(length & 0xFF) + payload;
  return jpeg.substr(0, 2) + segment + jpeg.substr(2);
}

TEST(ImageCodecs, JpegBytesMatchOpenCvAtEachQuality) {
  const Image img = TestImage();
  for (int quality : {1, 30, 75, 95, 100}) {
    auto ours = EncodeJpeg(img, quality);
    ASSERT_TRUE(ours.ok()) << ours.status().ToString();
    EXPECT_EQ(*ours, CvEncode(".jpg", AsMat(img), {cv::IMWRITE_JPEG_QUALITY, quality}))
        << "quality " << quality;
  }
}

TEST(ImageCodecs, JpegPixelsMatchOpenCv) {
  const Image img = TestImage();
  ExpectSameAsOpenCv(CvEncode(".jpg", AsMat(img)), "color 4:2:0");
  cv::Mat gray;
  cv::extractChannel(AsMat(img), gray, 1);
  ExpectSameAsOpenCv(CvEncode(".jpg", gray), "gray");
  ExpectSameAsOpenCv(CvEncode(".jpg", AsMat(img), {cv::IMWRITE_JPEG_PROGRESSIVE, 1}),
                     "progressive");
  for (int sampling : {TJSAMP_444, TJSAMP_422, TJSAMP_440}) {
    tjhandle tj = tjInitCompress();
    unsigned char* buf = nullptr;
    unsigned long size = 0;
    ASSERT_EQ(tjCompress2(tj, img.bgr.data(), img.width, 0, img.height, TJPF_BGR, &buf, &size,
                          sampling, 90, 0),
              0);
    ExpectSameAsOpenCv(std::string(reinterpret_cast<char*>(buf), size),
                       "sampling " + std::to_string(sampling));
    tjFree(buf);
    tjDestroy(tj);
  }
  // Stray bytes before the end marker: both decoders warn and give the image.
  const std::string whole = CvEncode(".jpg", AsMat(img));
  ExpectSameAsOpenCv(whole.substr(0, whole.size() - 2) + "abc" + whole.substr(whole.size() - 2),
                     "extraneous bytes");
}

TEST(ImageCodecs, JpegExifOrientationTurnsAsOpenCv) {
  const std::string jpeg = CvEncode(".jpg", AsMat(TestImage(37, 23)));
  for (bool big : {false, true}) {
    for (int o = 1; o <= 8; ++o) {
      ExpectSameAsOpenCv(WithExifOrientation(jpeg, o, big),
                         "orientation " + std::to_string(o) + (big ? " MM" : " II"));
    }
  }
  auto turned = DecodeImage(WithExifOrientation(jpeg, 6, false), "turned");
  ASSERT_TRUE(turned.ok());
  EXPECT_EQ(turned->width, 23);  // a real turn, not only the same pixels both ways
  EXPECT_EQ(turned->height, 37);
}

TEST(ImageCodecs, PngPixelsMatchOpenCv) {
  const Image img = TestImage();
  const cv::Mat bgr = AsMat(img);
  ExpectSameAsOpenCv(CvEncode(".png", bgr), "BGR 8-bit");
  cv::Mat gray, bgra, deep, deep_gray;
  cv::extractChannel(bgr, gray, 2);
  ExpectSameAsOpenCv(CvEncode(".png", gray), "gray 8-bit");
  cv::Mat alpha(bgr.size(), CV_8UC1);
  cv::randu(alpha, 0, 256);
  cv::merge(std::vector<cv::Mat>{bgr, alpha}, bgra);
  ExpectSameAsOpenCv(CvEncode(".png", bgra), "BGRA");
  bgr.convertTo(deep, CV_16UC3, 257.0, 91.0);  // low bytes that differ from the high ones
  ExpectSameAsOpenCv(CvEncode(".png", deep), "BGR 16-bit");
  gray.convertTo(deep_gray, CV_16UC1, 250.0);
  ExpectSameAsOpenCv(CvEncode(".png", deep_gray), "gray 16-bit");

  const int w = 45, h = 31;
  std::vector<uint8_t> indices(static_cast<size_t>(w) * h);
  for (size_t i = 0; i < indices.size(); ++i) indices[i] = static_cast<uint8_t>(i * 13 % 23);
  ExpectSameAsOpenCv(RawPng(w, h, PNG_COLOR_TYPE_PALETTE, 8, false, indices, w, 23),
                     "palette with tRNS");
  for (int depth : {1, 2, 4}) {
    const size_t row_bytes = (static_cast<size_t>(w) * depth + 7) / 8;
    std::vector<uint8_t> packed(row_bytes * h);
    for (size_t i = 0; i < packed.size(); ++i) packed[i] = static_cast<uint8_t>(i * 37 + 11);
    ExpectSameAsOpenCv(RawPng(w, h, PNG_COLOR_TYPE_GRAY, depth, false, packed, row_bytes),
                       "gray " + std::to_string(depth) + "-bit");
  }
  std::vector<uint8_t> rgb(static_cast<size_t>(w) * h * 3);
  for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = static_cast<uint8_t>(i * 29 % 251);
  ExpectSameAsOpenCv(RawPng(w, h, PNG_COLOR_TYPE_RGB, 8, true, rgb, w * 3), "interlaced RGB");
}

TEST(ImageCodecs, PngRoundTripIsExactBothWays) {
  const Image img = TestImage();
  auto png = EncodePng(img);
  ASSERT_TRUE(png.ok()) << png.status().ToString();
  auto back = DecodeImage(*png, "ours");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->bgr, img.bgr);
  ExpectSameAsOpenCv(*png, "our PNG through OpenCV");
}

TEST(ImageCodecs, FilesMatchOpenCvFiles) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("lipsync_image_io_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const Image img = TestImage();
  const std::string ours = (dir / "ours.jpg").string(), theirs = (dir / "theirs.jpg").string();
  ASSERT_TRUE(SaveImage(ours, img).ok());
  ASSERT_TRUE(cv::imwrite(theirs, AsMat(img)));
  auto read = [](const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  EXPECT_EQ(read(ours), read(theirs)) << "SaveImage's JPEG is not imwrite's (quality 95)";
  auto loaded = LoadImage(theirs);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  const cv::Mat want = cv::imread(theirs, cv::IMREAD_COLOR);
  EXPECT_EQ(loaded->bgr, std::vector<uint8_t>(want.data, want.data + want.total() * 3));
  const std::string upper = (dir / "FRAME.PNG").string();
  ASSERT_TRUE(SaveImage(upper, img).ok());
  EXPECT_EQ(LoadImage(upper)->bgr, img.bgr);
  const Status bmp = SaveImage((dir / "frame.bmp").string(), img);
  EXPECT_EQ(bmp.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bmp.message().find(".png, .jpg or .jpeg"), std::string::npos) << bmp.message();
  EXPECT_FALSE(std::filesystem::exists(dir / "frame.bmp"));
  std::filesystem::remove_all(dir);
}

TEST(ImageCodecs, BadInputGetsAClearError) {
  const Image img = TestImage();
  auto expect = [](const Status& s, StatusCode code, const std::string& text) {
    EXPECT_EQ(s.code(), code) << s.ToString();
    EXPECT_NE(s.message().find(text), std::string::npos) << s.message();
    EXPECT_LT(s.message().size(), 300u) << "the message must not echo the payload";
  };
  expect(DecodeImage("", "frame 1").status(), StatusCode::kDataLoss, "frame 1: it is empty");
  expect(DecodeImage(std::string(5000, 'x'), "frame 2").status(), StatusCode::kDataLoss,
         "frame 2: not a PNG or JPEG image");
  const std::string jpeg = *EncodeJpeg(img, 75);
  expect(DecodeImage(jpeg.substr(0, 40), "frame 3").status(), StatusCode::kDataLoss,
         "cannot decode frame 3 as JPEG");
  // Cut in the middle of the image data: OpenCV makes up the missing rows, lipsync refuses.
  const std::string big = *EncodeJpeg(TestImage(640, 480), 75);
  expect(DecodeImage(big.substr(0, big.size() / 2), "frame 6").status(), StatusCode::kDataLoss,
         "cannot decode frame 6 as JPEG: the JPEG data ends early (truncated file)");
  const std::string png = *EncodePng(img);
  expect(DecodeImage(png.substr(0, png.size() / 2), "frame 4").status(), StatusCode::kDataLoss,
         "cannot decode frame 4 as PNG: the PNG data ends early");
  // A header that claims 60000x60000 pixels is refused before any allocation.
  std::string huge = jpeg;
  const size_t sof = huge.find("\xFF\xC0", 2);
  ASSERT_NE(sof, std::string::npos);
  huge[sof + 5] = huge[sof + 7] = static_cast<char>(0xEA);
  huge[sof + 6] = huge[sof + 8] = static_cast<char>(0x60);
  expect(DecodeImage(huge, "frame 5").status(), StatusCode::kDataLoss, "larger than 2^28 pixels");
  expect(EncodeJpeg(img, 0).status(), StatusCode::kInvalidArgument,
         "quality must be 1..100, got 0");
  expect(EncodeJpeg(img, 101).status(), StatusCode::kInvalidArgument, "got 101");
  Image broken = img;
  broken.bgr.pop_back();
  expect(EncodeJpeg(broken, 75).status(), StatusCode::kInvalidArgument, "inconsistent image size");
  expect(EncodePng(broken).status(), StatusCode::kInvalidArgument, "inconsistent image size");
}

}  // namespace
}  // namespace lipsync
