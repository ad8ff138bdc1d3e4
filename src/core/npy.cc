#include "lipsync/npy.h"

#include <charconv>
#include <cstring>
#include <fstream>
#include <limits>
#include <optional>
#include <string_view>

#include "core/platform.h"

namespace lipsync {
namespace {

constexpr char kMagic[] = "\x93NUMPY";

Result<DataType> DescrToType(const std::string& descr) {
  if (descr == "<f4") return DataType::kFloat32;
  if (descr == "<f2") return DataType::kFloat16;
  if (descr == "|u1" || descr == "<u1") return DataType::kUInt8;
  if (descr == "<i4") return DataType::kInt32;
  if (descr == "<i8") return DataType::kInt64;
  return InvalidArgument("unsupported dtype " + Quoted(descr) +
                         " (supported: <f4, <f2, |u1, <i4, <i8, little-endian)");
}

const char* TypeToDescr(DataType t) {
  switch (t) {
    case DataType::kFloat32:
      return "<f4";
    case DataType::kFloat16:
      return "<f2";
    case DataType::kUInt8:
      return "|u1";
    case DataType::kInt32:
      return "<i4";
    case DataType::kInt64:
      return "<i8";
  }
  return "";
}

// NumPy's own limit on dimensions.
constexpr size_t kMaxDims = 64;

// The value after `'key':` in a header dict such as {'descr': '<f4', 'shape': (3, 4), ...}: the
// text from just after the colon (spaces skipped); empty when the key is missing.
std::string_view ValueOf(std::string_view header, std::string_view key) {
  std::string quoted = "'";  // appended: GCC 12 warns falsely (-Wrestrict) about "'" + string
  quoted.append(key).append("'");
  const size_t at = header.find(quoted);
  if (at == std::string_view::npos) return {};
  size_t i = at + key.size() + 2;
  while (i < header.size() && header[i] == ' ') ++i;
  if (i >= header.size() || header[i] != ':') return {};
  ++i;
  while (i < header.size() && header[i] == ' ') ++i;
  return header.substr(i);
}

// The text between `open` and the first `close` at the start of `value`.
std::optional<std::string_view> Between(std::string_view value, char open, char close) {
  if (value.empty() || value[0] != open) return std::nullopt;
  const size_t end = value.find(close, 1);
  if (end == std::string_view::npos) return std::nullopt;
  return value.substr(1, end - 1);
}

// The dimensions of a shape tuple's inside, e.g. "3, 4" or "5,": each a decimal number, none
// overflowing alone or multiplied together with the element size.
Result<Shape> ParseShape(std::string_view text, size_t element_bytes) {
  Shape shape;
  int64_t bytes = static_cast<int64_t>(element_bytes);
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && (text[i] == ' ' || text[i] == ',')) ++i;
    if (i == text.size()) break;
    int64_t d = 0;
    const auto [end, error] = std::from_chars(text.data() + i, text.data() + text.size(), d);
    if (error == std::errc::result_out_of_range ||
        (error == std::errc() && d > 0 && bytes > std::numeric_limits<int64_t>::max() / d)) {
      return InvalidArgument("shape " + Quoted(text, 64) + " is too large");
    }
    if (error != std::errc() || d < 0) {
      return InvalidArgument("shape " + Quoted(text, 64) + " is not a tuple of sizes");
    }
    if (shape.size() == kMaxDims) return InvalidArgument("shape has over 64 dimensions");
    bytes *= d;
    shape.push_back(d);
    i = static_cast<size_t>(end - text.data());
  }
  return shape;
}

}  // namespace

Result<Tensor> LoadNpy(const std::string& path) {
  std::ifstream in(platform::PathFromUtf8(path), std::ios::binary | std::ios::ate);
  if (!in) return NotFound("cannot open '" + path + "'");
  const auto file_bytes = static_cast<int64_t>(in.tellg());
  in.seekg(0);
  auto fail = [&](const std::string& why) {
    return DataLoss("'" + path + "' is not a valid .npy file: " + why);
  };

  char magic[6];
  unsigned char version[2];
  if (!in.read(magic, 6) || std::memcmp(magic, kMagic, 6) != 0) return fail("bad magic");
  if (!in.read(reinterpret_cast<char*>(version), 2)) return fail("truncated header");
  uint32_t header_len = 0;
  if (version[0] == 1) {
    unsigned char b[2];
    if (!in.read(reinterpret_cast<char*>(b), 2)) return fail("truncated header");
    header_len = b[0] | (b[1] << 8);
  } else if (version[0] == 2 || version[0] == 3) {
    unsigned char b[4];
    if (!in.read(reinterpret_cast<char*>(b), 4)) return fail("truncated header");
    header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
  } else {
    return fail("unknown version " + std::to_string(version[0]));
  }
  if (header_len > (1u << 20)) return fail("header too large");
  std::string header(header_len, '\0');
  if (!in.read(header.data(), header_len)) return fail("truncated header");

  const auto descr = Between(ValueOf(header, "descr"), '\'', '\'');
  if (!descr) return fail("header has no 'descr'");
  auto dtype = DescrToType(std::string(*descr));
  if (!dtype.ok()) return dtype.status().WithContext("'" + path + "'");
  if (ValueOf(header, "fortran_order").substr(0, 4) == "True") {
    return InvalidArgument("'" + path + "': Fortran-ordered arrays are not supported");
  }
  const auto shape_text = Between(ValueOf(header, "shape"), '(', ')');
  if (!shape_text) return fail("header has no 'shape'");
  auto shape = ParseShape(*shape_text, DataTypeSize(*dtype));
  if (!shape.ok()) return fail(shape.status().message());
  // The data must be in the file before anything is allocated for it.
  const int64_t data_bytes = ElementCount(*shape) * static_cast<int64_t>(DataTypeSize(*dtype));
  const int64_t left = file_bytes - static_cast<int64_t>(in.tellg());
  if (data_bytes > left) {
    return fail("truncated data: expected " + std::to_string(data_bytes) + " bytes for " +
                ShapeToString(*shape) + " " + DataTypeName(*dtype) + ", the file has " +
                std::to_string(left));
  }
  Tensor tensor(*dtype, *shape);
  if (!in.read(static_cast<char*>(tensor.data()),
               static_cast<std::streamsize>(tensor.byte_size()))) {
    return fail("truncated data: expected " + std::to_string(tensor.byte_size()) + " bytes for " +
                ShapeToString(*shape) + " " + DataTypeName(*dtype));
  }
  return tensor;
}

Status SaveNpy(const std::string& path, const TensorView& tensor) {
  std::string shape;
  for (int64_t d : tensor.shape) shape += std::to_string(d) + ", ";
  if (tensor.shape.size() > 1)
    shape.resize(shape.size() - 2);
  else if (tensor.shape.size() == 1)
    shape.resize(shape.size() - 1);
  std::string header = std::string("{'descr': '") + TypeToDescr(tensor.dtype) +
                       "', 'fortran_order': False, 'shape': (" + shape + "), }";
  // Pad so that the data starts on a 64-byte boundary; the header ends with a newline.
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  std::ofstream out(platform::PathFromUtf8(path), std::ios::binary);
  if (!out) return NotFound("cannot write '" + path + "'");
  out.write(kMagic, 6);
  const char version[2] = {1, 0};
  out.write(version, 2);
  const uint16_t len = static_cast<uint16_t>(header.size());
  const char len_bytes[2] = {static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
  out.write(len_bytes, 2);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(static_cast<const char*>(tensor.data),
            static_cast<std::streamsize>(tensor.byte_size()));
  if (!out) return Internal("failed writing '" + path + "'");
  return Status::Ok();
}

}  // namespace lipsync
