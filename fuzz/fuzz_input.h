// Reading a fuzz input: as a sequence of small choices, for the targets that build their test case
// (a model, a signal, a request) from the bytes rather than parse them; as audio samples; or as a
// file, for the readers that take a path.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <random>
#include <string>

namespace lipsync::fuzz {

// Each choice takes one byte; past the input's end every choice is the first.
class Choices {
 public:
  Choices(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  int Pick(int lo, int hi) {  // inclusive
    const int byte = pos_ < size_ ? data_[pos_++] : 0;
    return hi <= lo ? lo : lo + byte % (hi - lo + 1);
  }
  // Two bytes, for ranges wider than one byte reaches.
  int PickWide(int lo, int hi) {
    const int a = Pick(0, 255), b = Pick(0, 255);
    return hi <= lo ? lo : lo + (a << 8 | b) % (hi - lo + 1);
  }
  bool OneIn(int n) { return Pick(0, n - 1) == 0; }
  template <typename T>
  T Of(std::initializer_list<T> options) {
    return options.begin()[Pick(0, static_cast<int>(options.size()) - 1)];
  }
  bool done() const { return pos_ >= size_; }
  // The bytes not read yet.
  const uint8_t* rest() const { return data_ + (pos_ < size_ ? pos_ : size_); }
  size_t rest_size() const { return pos_ < size_ ? size_ - pos_ : 0; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// Sample i of `bytes` (`have` > 0 of them) read over and over: as little-endian int16 scaled to
// [-1, 1), or as float bits (NaN, infinities and denormals included).
inline float Int16Sample(const uint8_t* bytes, size_t have, size_t i) {
  const uint8_t lo = bytes[(2 * i) % have], hi = bytes[(2 * i + 1) % have];
  return static_cast<float>(static_cast<int16_t>(lo | hi << 8)) / 32768.0f;
}
inline float FloatBitsSample(const uint8_t* bytes, size_t have, size_t i) {
  uint32_t bits = 0;
  for (int b = 0; b < 4; ++b) bits |= static_cast<uint32_t>(bytes[(4 * i + b) % have]) << 8 * b;
  float v;
  std::memcpy(&v, &bits, sizeof(v));
  return v;
}

// A path in the temporary folder that is this process's own (targets run side by side).
inline std::string ScratchPath(const std::string& name) {
  static const std::string tag = std::to_string(std::random_device{}());
  std::string file = "lipsync-fuzz-";
  file.append(tag).append("-").append(name);
  return (std::filesystem::temp_directory_path() / file).string();
}

// Writes `size` bytes to `path`, replacing what was there.
inline void WriteBytes(const std::string& path, const void* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
}

}  // namespace lipsync::fuzz
