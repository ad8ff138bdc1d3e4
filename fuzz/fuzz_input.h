// Reading a fuzz input as a sequence of small choices, for the targets that build their test case
// (a model, a signal, a request) from the bytes rather than parse them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>

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

}  // namespace lipsync::fuzz
