// PNG through libpng's own API, with the transformations that give OpenCV's IMREAD_COLOR result:
// 16-bit samples cut to their high byte, alpha and tRNS dropped (not composited), palette and
// gray expanded to BGR, no gamma correction. Written with OpenCV's fast settings (SUB filter,
// zlib level 1, run-length strategy): render's frame folders are written at frame rate.
//
// libpng reports errors by longjmp, so the functions that call it hold no object with a
// destructor between setjmp and the calls that may jump; the caller owns every buffer.
#include <png.h>
#include <zlib.h>

#include <csetjmp>
#include <cstring>
#include <vector>

#include "pipeline/media/image_codecs.h"

namespace lipsync::internal {
namespace {

constexpr unsigned char kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

struct Reader {
  const unsigned char* data;
  size_t size;
  size_t at;
  char error[200];
};

struct Writer {
  std::string* out;
  char error[200];
};

void OnError(png_structp png, png_const_charp message) {
  auto* error = static_cast<char*>(png_get_error_ptr(png));
  std::snprintf(error, 200, "%s", message);
  png_longjmp(png, 1);
}

void OnWarning(png_structp, png_const_charp) {}  // as OpenCV: warnings do not stop a read

void ReadBytes(png_structp png, png_bytep out, png_size_t count) {
  auto* r = static_cast<Reader*>(png_get_io_ptr(png));
  if (count > r->size - r->at) png_error(png, "the PNG data ends early (truncated file)");
  std::memcpy(out, r->data + r->at, count);
  r->at += count;
}

void WriteBytes(png_structp png, png_bytep data, png_size_t count) {
  auto* w = static_cast<Writer*>(png_get_io_ptr(png));
  w->out->append(reinterpret_cast<const char*>(data), count);
}

void Flush(png_structp) {}

// Reads the header, then, once *image has been sized by `size_image`, the pixels. Returns false
// with r->error set on failure.
bool ReadPng(Reader* r, Image* image, std::vector<png_bytep>* rows) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, r->error, OnError, OnWarning);
  if (!png) return false;
  png_infop info = png_create_info_struct(png);
  if (!info || setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, info ? &info : nullptr, nullptr);
    return false;
  }
  png_set_read_fn(png, r, ReadBytes);
  png_read_info(png, info);
  const png_uint_32 width = png_get_image_width(png, info);
  const png_uint_32 height = png_get_image_height(png, info);
  const int depth = png_get_bit_depth(png, info);
  const int color = png_get_color_type(png, info);
  if (static_cast<uint64_t>(width) * height > kMaxImagePixels) {
    png_error(png, "the image is larger than 2^28 pixels");
  }
  if (depth > 8) png_set_strip_16(png);
  png_set_strip_alpha(png);
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if ((color & PNG_COLOR_MASK_COLOR) == 0 && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (color & PNG_COLOR_MASK_COLOR) {
    png_set_bgr(png);
  } else {
    png_set_gray_to_rgb(png);
  }
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  if (png_get_rowbytes(png, info) != static_cast<size_t>(width) * 3) {
    png_error(png, "unexpected row layout after conversion to BGR");
  }
  image->width = static_cast<int>(width);
  image->height = static_cast<int>(height);
  image->bgr.resize(static_cast<size_t>(width) * height * 3);
  rows->resize(height);
  for (png_uint_32 y = 0; y < height; ++y) {
    (*rows)[y] = image->bgr.data() + static_cast<size_t>(y) * width * 3;
  }
  png_read_image(png, rows->data());
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  return true;
}

bool WritePng(Writer* w, const Image& image, std::vector<png_bytep>* rows) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, w->error, OnError, OnWarning);
  if (!png) return false;
  png_infop info = png_create_info_struct(png);
  if (!info || setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, info ? &info : nullptr);
    return false;
  }
  png_set_write_fn(png, w, WriteBytes, Flush);
  png_set_IHDR(png, info, static_cast<png_uint_32>(image.width),
               static_cast<png_uint_32>(image.height), 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_set_filter(png, PNG_FILTER_TYPE_BASE, PNG_FILTER_SUB);
  png_set_compression_level(png, Z_BEST_SPEED);
  png_set_compression_strategy(png, Z_RLE);
  png_write_info(png, info);
  png_set_bgr(png);
  png_write_image(png, rows->data());
  png_write_end(png, info);
  png_destroy_write_struct(&png, &info);
  return true;
}

}  // namespace

bool LooksLikePng(std::string_view bytes) {
  return bytes.size() >= sizeof(kSignature) &&
         std::memcmp(bytes.data(), kSignature, sizeof(kSignature)) == 0;
}

Result<Image> DecodePng(std::string_view bytes, const std::string& what) {
  Reader r{reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), 0, {}};
  Image image;
  std::vector<png_bytep> rows;
  if (!ReadPng(&r, &image, &rows)) {
    return DataLoss("cannot decode " + what + " as PNG: " + (r.error[0] ? r.error : "no memory"));
  }
  return image;
}

}  // namespace lipsync::internal

namespace lipsync {

Result<std::string> EncodePng(const Image& image) {
  LIPSYNC_RETURN_IF_ERROR(internal::CheckImage(image, "cannot encode PNG"));
  std::string out;
  internal::Writer w{&out, {}};
  std::vector<png_bytep> rows(static_cast<size_t>(image.height));
  for (int y = 0; y < image.height; ++y) {
    // libpng only reads the rows it is given to write.
    rows[static_cast<size_t>(y)] =
        const_cast<png_bytep>(image.bgr.data() + static_cast<size_t>(y) * image.width * 3);
  }
  if (!internal::WritePng(&w, image, &rows)) {
    return Internal(std::string("PNG encoding failed: ") + (w.error[0] ? w.error : "no memory"));
  }
  return out;
}

}  // namespace lipsync
