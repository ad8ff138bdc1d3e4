// Tensors: an owning host Tensor and non-owning views over caller memory.
//
// All tensors are dense and row-major (the model's own NCHW layout). Views let callers hand their
// own buffers to the engine without a copy; a view says where its bytes live (MemoryType), so that
// a GPU backend can take device memory as it is and a CPU backend can refuse it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lipsync/status.h"

namespace lipsync {

enum class DataType { kFloat32, kFloat16, kUInt8, kInt32, kInt64 };

const char* DataTypeName(DataType type);  // "float32", "float16", ...
size_t DataTypeSize(DataType type);
Result<DataType> ParseDataType(const std::string& name);

using Shape = std::vector<int64_t>;

// Where a view's bytes live. Pinned host memory is host memory the GPU can copy from without a
// staging copy (cudaHostAlloc); every backend that reads host memory also reads pinned memory.
enum class MemoryType { kHost, kPinnedHost, kDevice };
const char* MemoryTypeName(MemoryType type);  // "host", "pinned host", "device"

// "[1,6,320,320]"; dynamic dimensions (-1) print as "N" when `dynamic_as_n` is set, else "?".
std::string ShapeToString(const Shape& shape, bool dynamic_as_n = true);
// Number of elements; 0 for an empty shape dimension, 1 for a scalar.
int64_t ElementCount(const Shape& shape);

// A read-only view of a tensor. `device_id` names the GPU for device memory.
struct TensorView {
  DataType dtype = DataType::kFloat32;
  Shape shape;
  const void* data = nullptr;
  MemoryType memory = MemoryType::kHost;
  int device_id = 0;

  size_t byte_size() const {
    return static_cast<size_t>(ElementCount(shape)) * DataTypeSize(dtype);
  }
  template <typename T>
  const T* as() const {
    return static_cast<const T*>(data);
  }
};

// A writable view of a tensor.
struct MutableTensorView {
  DataType dtype = DataType::kFloat32;
  Shape shape;
  void* data = nullptr;
  MemoryType memory = MemoryType::kHost;
  int device_id = 0;

  size_t byte_size() const {
    return static_cast<size_t>(ElementCount(shape)) * DataTypeSize(dtype);
  }
  TensorView view() const { return {dtype, shape, data, memory, device_id}; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data);
  }
};

// An owning, 64-byte aligned host tensor. Movable, not copyable (use Clone()).
class Tensor {
 public:
  Tensor() = default;
  Tensor(DataType dtype, Shape shape);  // zero-filled
  // Without the zero fill, for buffers that are written in full right away.
  static Tensor Uninitialized(DataType dtype, Shape shape);
  Tensor(Tensor&&) noexcept = default;
  Tensor& operator=(Tensor&&) noexcept = default;
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;

  Tensor Clone() const;

  DataType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t element_count() const { return ElementCount(shape_); }
  size_t byte_size() const { return static_cast<size_t>(element_count()) * DataTypeSize(dtype_); }
  void* data() { return data_.get(); }
  const void* data() const { return data_.get(); }
  template <typename T>
  T* data_as() {
    return static_cast<T*>(data());
  }
  template <typename T>
  const T* data_as() const {
    return static_cast<const T*>(data());
  }

  TensorView view() const { return {dtype_, shape_, data()}; }
  MutableTensorView mutable_view() { return {dtype_, shape_, data()}; }

 private:
  struct NoFill {};
  Tensor(DataType dtype, Shape shape, NoFill);
  struct FreeDeleter {
    void operator()(void* p) const;
  };
  DataType dtype_ = DataType::kFloat32;
  Shape shape_;
  std::unique_ptr<void, FreeDeleter> data_;
};

// IEEE half <-> float conversions (round to nearest even), for float16 inputs and outputs.
uint16_t FloatToHalf(float value);
float HalfToFloat(uint16_t value);

}  // namespace lipsync
