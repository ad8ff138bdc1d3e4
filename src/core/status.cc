#include "lipsync/status.h"

#include <string_view>

namespace lipsync {
namespace {

// The largest n <= size whose cut does not split a UTF-8 character.
size_t Utf8Boundary(std::string_view text, size_t size) {
  if (size >= text.size()) return text.size();
  while (size > 0 && (static_cast<unsigned char>(text[size]) & 0xC0) == 0x80) --size;
  return size;
}

}  // namespace

const char* StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return "OK";
    case StatusCode::kInvalidArgument:
      return "INVALID_ARGUMENT";
    case StatusCode::kNotFound:
      return "NOT_FOUND";
    case StatusCode::kUnavailable:
      return "UNAVAILABLE";
    case StatusCode::kResourceExhausted:
      return "RESOURCE_EXHAUSTED";
    case StatusCode::kFailedPrecondition:
      return "FAILED_PRECONDITION";
    case StatusCode::kDeadlineExceeded:
      return "DEADLINE_EXCEEDED";
    case StatusCode::kCancelled:
      return "CANCELLED";
    case StatusCode::kUnimplemented:
      return "UNIMPLEMENTED";
    case StatusCode::kDataLoss:
      return "DATA_LOSS";
    case StatusCode::kInternal:
      return "INTERNAL";
  }
  return "UNKNOWN";
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  return std::string(StatusCodeName(code_)) + ": " + message_;
}

Status Status::WithContext(const std::string& context) const {
  if (ok()) return *this;
  return Status(code_, context + ": " + message_);
}

std::string Quoted(std::string_view text, size_t max_bytes) {
  const size_t kept = Utf8Boundary(text, max_bytes);
  std::string out = "'";
  for (size_t i = 0; i < kept; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    out += (c < 0x20 || c == 0x7F) ? '?' : static_cast<char>(c);
  }
  if (kept == text.size()) return out + "'";
  return out + "...' (" + std::to_string(text.size()) + " bytes)";
}

std::string Bounded(std::string message, size_t max_bytes) {
  if (message.size() <= max_bytes) return message;
  const std::string note = " ... (cut: " + std::to_string(message.size()) + " bytes in all)";
  if (note.size() >= max_bytes) {  // no room for the note: the start alone
    message.resize(Utf8Boundary(message, max_bytes));
    return message;
  }
  message.resize(Utf8Boundary(message, max_bytes - note.size()));
  return message + note;
}

}  // namespace lipsync
