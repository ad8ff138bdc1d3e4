#include "lipsync/npy.h"

#include <cstring>
#include <fstream>
#include <regex>

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
  return InvalidArgument("unsupported dtype '" + descr +
                         "' (supported: <f4, <f2, |u1, <i4, <i8, little-endian)");
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

Result<Shape> ParseShape(const std::string& text) {
  Shape shape;
  std::regex number(R"(\d+)");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), number);
       it != std::sregex_iterator(); ++it) {
    shape.push_back(std::stoll(it->str()));
  }
  return shape;
}

}  // namespace

Result<Tensor> LoadNpy(const std::string& path) {
  std::ifstream in(platform::PathFromUtf8(path), std::ios::binary);
  if (!in) return NotFound("cannot open '" + path + "'");
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

  std::smatch m;
  if (!std::regex_search(header, m, std::regex(R"('descr'\s*:\s*'([^']+)')"))) {
    return fail("header has no 'descr'");
  }
  auto dtype = DescrToType(m[1].str());
  if (!dtype.ok()) return dtype.status().WithContext("'" + path + "'");
  if (std::regex_search(header, std::regex(R"('fortran_order'\s*:\s*True)"))) {
    return InvalidArgument("'" + path + "': Fortran-ordered arrays are not supported");
  }
  if (!std::regex_search(header, m, std::regex(R"('shape'\s*:\s*\(([^)]*)\))"))) {
    return fail("header has no 'shape'");
  }
  auto shape = ParseShape(m[1].str());
  if (!shape.ok()) return shape.status();
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
