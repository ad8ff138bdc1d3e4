// Status and Result<T>: how every lipsync function reports failure.
//
// Functions that can fail return a Status (no value) or a Result<T> (a value or a Status). Errors
// carry a code and a message that names the problem, e.g.
//   input 'audio_input': expected shape [N,32,16,16], got [1,32,16]
// Exceptions thrown by third-party libraries are caught inside lipsync and turned into a Status.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace lipsync {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,     // bad input from the caller: shape, type, value, flag
  kNotFound,            // a file, model or tensor name that does not exist
  kUnavailable,         // a capability this build or machine lacks (provider, GPU)
  kResourceExhausted,   // a queue or memory limit was hit
  kFailedPrecondition,  // the object is not in a state to do this
  kDeadlineExceeded,    // the caller's deadline passed before the work ran
  kCancelled,           // the caller went away
  kUnimplemented,       // a model feature (operator, shape) this backend does not support
  kDataLoss,            // a truncated or corrupt file
  kInternal,            // a bug or an unexpected failure in a library below us
};

const char* StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "INVALID_ARGUMENT: input 'visual_input': ..." or "OK".
  std::string ToString() const;

  // Returns a copy with "context: " put before the message; OK stays OK.
  Status WithContext(const std::string& context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status InvalidArgument(std::string m) {
  return {StatusCode::kInvalidArgument, std::move(m)};
}
inline Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
inline Status Unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
inline Status Unimplemented(std::string m) { return {StatusCode::kUnimplemented, std::move(m)}; }
inline Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }
inline Status DataLoss(std::string m) { return {StatusCode::kDataLoss, std::move(m)}; }
inline Status FailedPrecondition(std::string m) {
  return {StatusCode::kFailedPrecondition, std::move(m)};
}
inline Status ResourceExhausted(std::string m) {
  return {StatusCode::kResourceExhausted, std::move(m)};
}

// A name a caller gave, in single quotes, for a message: longer than `max_bytes`, its first bytes
// then "..." and its size; control characters as '?'. A message names what it refuses without
// carrying a payload back, e.g. unknown model 'aaaaaaaa...' (1048576 bytes).
std::string Quoted(std::string_view text, size_t max_bytes = 128);

// `message` cut to at most `max_bytes` (at a UTF-8 character boundary) with its full size noted:
// the last guard on a message that leaves the process.
constexpr size_t kMaxMessageBytes = 2048;
std::string Bounded(std::string message, size_t max_bytes = kMaxMessageBytes);

// A value or the Status that explains why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {
    if (status_.ok()) status_ = Internal("Result constructed from an OK status without a value");
  }

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }

  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() & { return *value_; }
  const T& operator*() const& { return *value_; }

 private:
  std::optional<T> value_;
  Status status_;
};

}  // namespace lipsync

#define LIPSYNC_CONCAT_INNER(a, b) a##b
#define LIPSYNC_CONCAT(a, b) LIPSYNC_CONCAT_INNER(a, b)

// Returns from the enclosing function if `expr` (a Status) is not OK.
#define LIPSYNC_RETURN_IF_ERROR(expr)                  \
  do {                                                 \
    ::lipsync::Status lipsync_status_ = (expr);        \
    if (!lipsync_status_.ok()) return lipsync_status_; \
  } while (0)

// `LIPSYNC_ASSIGN_OR_RETURN(auto x, MakeX());` declares x from a Result or returns its Status.
#define LIPSYNC_ASSIGN_OR_RETURN(decl, expr) \
  LIPSYNC_ASSIGN_OR_RETURN_IMPL(LIPSYNC_CONCAT(lipsync_result_, __LINE__), decl, expr)
#define LIPSYNC_ASSIGN_OR_RETURN_IMPL(tmp, decl, expr) \
  auto tmp = (expr);                                   \
  if (!tmp.ok()) return tmp.status();                  \
  decl = std::move(tmp).value()
