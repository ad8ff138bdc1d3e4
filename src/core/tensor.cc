#include "lipsync/tensor.h"

#include <cstdlib>
#include <cstring>

#include "core/platform.h"

namespace lipsync {

const char* DataTypeName(DataType type) {
  switch (type) {
    case DataType::kFloat32:
      return "float32";
    case DataType::kFloat16:
      return "float16";
    case DataType::kUInt8:
      return "uint8";
    case DataType::kInt32:
      return "int32";
    case DataType::kInt64:
      return "int64";
  }
  return "unknown";
}

const char* MemoryTypeName(MemoryType type) {
  switch (type) {
    case MemoryType::kHost:
      return "host";
    case MemoryType::kPinnedHost:
      return "pinned host";
    case MemoryType::kDevice:
      return "device";
  }
  return "unknown";
}

size_t DataTypeSize(DataType type) {
  switch (type) {
    case DataType::kFloat32:
      return 4;
    case DataType::kFloat16:
      return 2;
    case DataType::kUInt8:
      return 1;
    case DataType::kInt32:
      return 4;
    case DataType::kInt64:
      return 8;
  }
  return 0;
}

Result<DataType> ParseDataType(const std::string& name) {
  for (DataType t : {DataType::kFloat32, DataType::kFloat16, DataType::kUInt8, DataType::kInt32,
                     DataType::kInt64}) {
    if (name == DataTypeName(t)) return t;
  }
  if (name == "fp32" || name == "float") return DataType::kFloat32;
  if (name == "fp16" || name == "half") return DataType::kFloat16;
  return InvalidArgument("unknown data type '" + name + "'");
}

std::string ShapeToString(const Shape& shape, bool dynamic_as_n) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ",";
    s += shape[i] < 0 ? (dynamic_as_n ? "N" : "?") : std::to_string(shape[i]);
  }
  return s + "]";
}

int64_t ElementCount(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d < 0 ? 0 : d;
  return n;
}

void Tensor::FreeDeleter::operator()(void* p) const { platform::AlignedFree(p); }

Tensor::Tensor(DataType dtype, Shape shape, NoFill) : dtype_(dtype), shape_(std::move(shape)) {
  constexpr size_t kAlign = 64;
  size_t bytes = (byte_size() + kAlign - 1) / kAlign * kAlign;
  if (bytes == 0) bytes = kAlign;
  data_.reset(platform::AlignedAlloc(kAlign, bytes));
  if (!data_) throw std::bad_alloc();
}

Tensor::Tensor(DataType dtype, Shape shape) : Tensor(dtype, std::move(shape), NoFill{}) {
  std::memset(data_.get(), 0, byte_size());
}

Tensor Tensor::Uninitialized(DataType dtype, Shape shape) {
  return Tensor(dtype, std::move(shape), NoFill{});
}

Tensor Tensor::Clone() const {
  Tensor copy(dtype_, shape_);
  if (byte_size()) std::memcpy(copy.data(), data(), byte_size());
  return copy;
}

uint16_t FloatToHalf(float value) {
  uint32_t x;
  std::memcpy(&x, &value, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) {  // Inf or NaN
    return static_cast<uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u));
  }
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow to Inf
  if (abs < 0x38800000u) {                                               // subnormal half or zero
    if (abs < 0x33000000u) return static_cast<uint16_t>(sign);
    const uint32_t exp = abs >> 23;
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - exp;  // 14..24
    uint32_t half = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1);
    const uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (half & 1u))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t half = ((abs - 0x38000000u) >> 13);
  const uint32_t rem = abs & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (half & 1u))) ++half;
  return static_cast<uint16_t>(sign | half);
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = (static_cast<uint32_t>(h) & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --exp;
      }
      bits = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

}  // namespace lipsync
