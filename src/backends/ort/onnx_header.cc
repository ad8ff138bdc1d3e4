#include "backends/ort/onnx_header.h"

namespace lipsync {
namespace {

// A cursor over protobuf wire-format bytes.
class WireReader {
 public:
  explicit WireReader(std::string_view bytes) : p_(bytes.data()), end_(p_ + bytes.size()) {}
  bool done() const { return p_ >= end_; }

  bool Varint(uint64_t* value) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64 && p_ < end_; shift += 7) {
      const auto byte = static_cast<uint8_t>(*p_++);
      v |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if (!(byte & 0x80)) {
        *value = v;
        return true;
      }
    }
    return false;
  }

  // Reads one field; for length-delimited fields `payload` views its bytes.
  bool Field(uint32_t* number, uint32_t* wire_type, uint64_t* varint, std::string_view* payload) {
    uint64_t key;
    if (!Varint(&key)) return false;
    *number = static_cast<uint32_t>(key >> 3);
    *wire_type = static_cast<uint32_t>(key & 7);
    switch (*wire_type) {
      case 0:
        return Varint(varint);
      case 1:
        return Skip(8);
      case 5:
        return Skip(4);
      case 2: {
        uint64_t len;
        if (!Varint(&len) || len > static_cast<uint64_t>(end_ - p_)) return false;
        *payload = std::string_view(p_, len);
        p_ += len;
        return true;
      }
      default:
        return false;  // groups are not used by ONNX
    }
  }

 private:
  bool Skip(size_t n) {
    if (static_cast<size_t>(end_ - p_) < n) return false;
    p_ += n;
    return true;
  }
  const char* p_;
  const char* end_;
};

}  // namespace

Result<OnnxHeader> ReadOnnxHeader(std::string_view bytes) {
  OnnxHeader header;
  WireReader reader(bytes);
  bool saw_graph = false;
  while (!reader.done()) {
    uint32_t number, wire_type;
    uint64_t varint = 0;
    std::string_view payload;
    if (!reader.Field(&number, &wire_type, &varint, &payload)) {
      return DataLoss("malformed or truncated ONNX model (bad protobuf field)");
    }
    if (number == 1 && wire_type == 0) header.ir_version = static_cast<int64_t>(varint);
    if (number == 2 && wire_type == 2) header.producer_name = std::string(payload);
    if (number == 3 && wire_type == 2) header.producer_version = std::string(payload);
    if (number == 7 && wire_type == 2) saw_graph = true;
    if (number == 8 && wire_type == 2) {  // OperatorSetIdProto {domain = 1; version = 2}
      WireReader opset(payload);
      std::string_view domain;
      uint64_t version = 0;
      while (!opset.done()) {
        uint32_t n, w;
        uint64_t v = 0;
        std::string_view s;
        if (!opset.Field(&n, &w, &v, &s)) return DataLoss("malformed opset_import in ONNX model");
        if (n == 1 && w == 2) domain = s;
        if (n == 2 && w == 0) version = v;
      }
      if (domain.empty() || domain == "ai.onnx") header.opset = static_cast<int64_t>(version);
    }
  }
  if (!saw_graph) return DataLoss("ONNX model has no graph");
  return header;
}

}  // namespace lipsync
