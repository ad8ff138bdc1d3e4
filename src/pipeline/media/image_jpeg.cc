// JPEG through libjpeg-turbo's TurboJPEG API, set up as OpenCV sets up libjpeg-turbo: accurate
// (integer) DCT both ways, 4:2:0 baseline when encoding, fancy upsampling when decoding, and the
// EXIF orientation applied after decoding. A decoder warning (stray bytes between markers) still
// gives the image, as OpenCV's does; a file that ends early is refused, where OpenCV makes up the
// missing rows.
#include <turbojpeg.h>

#include <cstring>
#include <memory>

#include "pipeline/media/image_codecs.h"

namespace lipsync::internal {
namespace {

struct TjDestroy {
  void operator()(void* handle) const { tjDestroy(handle); }
};
using TjHandle = std::unique_ptr<void, TjDestroy>;

// libjpeg's warning for a file that ends before its image data does (JWRN_JPEG_EOF).
constexpr const char* kPrematureEnd = "Premature end of JPEG file";

// One compressor and one decompressor per thread: the server encodes from many threads, and a
// handle keeps its buffers between images.
tjhandle Compressor() {
  thread_local TjHandle handle(tjInitCompress());
  return handle.get();
}

tjhandle Decompressor() {
  thread_local TjHandle handle(tjInitDecompress());
  return handle.get();
}

uint32_t ReadUint(const unsigned char* p, int bytes, bool big_endian) {
  uint32_t v = 0;
  for (int i = 0; i < bytes; ++i) {
    v |= static_cast<uint32_t>(p[big_endian ? i : bytes - 1 - i]) << (8 * (bytes - 1 - i));
  }
  return v;
}

// The orientation (1..8) in the first EXIF segment before the image data; 1 when there is none
// or it cannot be read.
int ExifOrientation(std::string_view bytes) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  size_t at = 2;  // after SOI
  while (at + 4 <= n && p[at] == 0xFF) {
    const unsigned char marker = p[at + 1];
    if (marker == 0xFF) {  // fill byte
      ++at;
      continue;
    }
    if (marker == 0xDA || marker == 0xD9) break;  // image data or end: no EXIF before it
    const size_t length = ReadUint(p + at + 2, 2, true);
    if (length < 2 || at + 2 + length > n) break;
    const unsigned char* seg = p + at + 4;
    const size_t seg_size = length - 2;
    if (marker == 0xE1 && seg_size >= 14 && std::memcmp(seg, "Exif\0\0", 6) == 0) {
      const unsigned char* tiff = seg + 6;
      const size_t tiff_size = seg_size - 6;
      const bool big = tiff[0] == 'M' && tiff[1] == 'M';
      if (!big && !(tiff[0] == 'I' && tiff[1] == 'I')) return 1;
      const uint32_t ifd = ReadUint(tiff + 4, 4, big);
      if (ifd + 2 > tiff_size) return 1;
      const uint32_t entries = ReadUint(tiff + ifd, 2, big);
      for (uint32_t i = 0; i < entries; ++i) {
        const size_t e = ifd + 2 + static_cast<size_t>(i) * 12;
        if (e + 12 > tiff_size) return 1;
        if (ReadUint(tiff + e, 2, big) == 0x0112 && ReadUint(tiff + e + 2, 2, big) == 3) {
          const uint32_t v = ReadUint(tiff + e + 8, 2, big);
          return v >= 1 && v <= 8 ? static_cast<int>(v) : 1;
        }
      }
      return 1;
    }
    at += 2 + length;
  }
  return 1;
}

// The image as EXIF orientation 2..8 says it is to be shown (flips, and for 5..8 a transpose).
Image Orient(const Image& src, int orientation) {
  const int w = src.width, h = src.height;
  const bool transposed = orientation >= 5;
  Image out{transposed ? h : w, transposed ? w : h, {}};
  out.bgr.resize(src.bgr.size());
  for (int y = 0; y < out.height; ++y) {
    for (int x = 0; x < out.width; ++x) {
      int sx = x, sy = y;
      switch (orientation) {
        case 2:
          sx = w - 1 - x;
          break;
        case 3:
          sx = w - 1 - x;
          sy = h - 1 - y;
          break;
        case 4:
          sy = h - 1 - y;
          break;
        case 5:
          sx = y;
          sy = x;
          break;
        case 6:
          sx = y;
          sy = h - 1 - x;
          break;
        case 7:
          sx = w - 1 - y;
          sy = h - 1 - x;
          break;
        case 8:
          sx = w - 1 - y;
          sy = x;
          break;
        default:
          break;
      }
      const uint8_t* from = &src.bgr[(static_cast<size_t>(sy) * w + sx) * 3];
      uint8_t* to = &out.bgr[(static_cast<size_t>(y) * out.width + x) * 3];
      to[0] = from[0];
      to[1] = from[1];
      to[2] = from[2];
    }
  }
  return out;
}

}  // namespace

bool LooksLikeJpeg(std::string_view bytes) {
  return bytes.size() >= 3 && static_cast<unsigned char>(bytes[0]) == 0xFF &&
         static_cast<unsigned char>(bytes[1]) == 0xD8 &&
         static_cast<unsigned char>(bytes[2]) == 0xFF;
}

Result<Image> DecodeJpeg(std::string_view bytes, const std::string& what) {
  tjhandle tj = Decompressor();
  if (!tj) return ResourceExhausted("cannot decode " + what + ": no JPEG decoder (out of memory)");
  auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  const auto size = static_cast<unsigned long>(bytes.size());
  int width = 0, height = 0, subsampling = 0, colorspace = 0;
  if (tjDecompressHeader3(tj, data, size, &width, &height, &subsampling, &colorspace) != 0) {
    return DataLoss("cannot decode " + what + " as JPEG: " + tjGetErrorStr2(tj));
  }
  if (colorspace == TJCS_CMYK || colorspace == TJCS_YCCK) {
    return DataLoss("cannot decode " + what + ": CMYK JPEG is not supported (save it as RGB)");
  }
  if (static_cast<uint64_t>(width) * static_cast<uint64_t>(height) > kMaxImagePixels) {
    return DataLoss("cannot decode " + what + ": " + std::to_string(width) + "x" +
                    std::to_string(height) + " is larger than 2^28 pixels");
  }
  Image image{width, height, std::vector<uint8_t>(static_cast<size_t>(width) * height * 3)};
  if (tjDecompress2(tj, data, size, image.bgr.data(), width, 0, height, TJPF_BGR,
                    TJFLAG_ACCURATEDCT) != 0) {
    const std::string why = tjGetErrorStr2(tj);
    if (why == kPrematureEnd) {
      return DataLoss("cannot decode " + what +
                      " as JPEG: the JPEG data ends early (truncated file)");
    }
    if (tjGetErrorCode(tj) != TJERR_WARNING) {
      return DataLoss("cannot decode " + what + " as JPEG: " + why);
    }
  }
  const int orientation = ExifOrientation(bytes);
  if (orientation != 1) return Orient(image, orientation);
  return image;
}

}  // namespace lipsync::internal

namespace lipsync {

Result<std::string> EncodeJpeg(const Image& image, int quality) {
  if (quality < 1 || quality > 100) {
    return InvalidArgument("JPEG quality must be 1..100, got " + std::to_string(quality));
  }
  LIPSYNC_RETURN_IF_ERROR(internal::CheckImage(image, "cannot encode JPEG"));
  tjhandle tj = internal::Compressor();
  if (!tj) return ResourceExhausted("no JPEG encoder (out of memory)");
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  const int rc = tjCompress2(tj, image.bgr.data(), image.width, 0, image.height, TJPF_BGR, &buffer,
                             &size, TJSAMP_420, quality, TJFLAG_ACCURATEDCT);
  std::unique_ptr<unsigned char, void (*)(unsigned char*)> owned(buffer, tjFree);
  if (rc != 0) return Internal(std::string("JPEG encoding failed: ") + tjGetErrorStr2(tj));
  return std::string(reinterpret_cast<const char*>(buffer), size);
}

}  // namespace lipsync
