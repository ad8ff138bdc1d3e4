// WAV files for the audio tests: a minimal RIFF/WAVE writer, and nothing the decoder would not
// also find in a real file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

namespace lipsync::testing {

// `count` samples in all (interleaved over `channels`) of `bytes_per_sample` bytes each;
// `format` 1 is integer PCM, 3 is IEEE float.
inline void WriteWav(const std::string& path, const void* samples, size_t count,
                     int bytes_per_sample, int format = 1, int channels = 1, int rate = 16000) {
  const uint32_t data = static_cast<uint32_t>(count * bytes_per_sample);
  std::ofstream out(path, std::ios::binary);
  auto u32 = [&](uint32_t v) { out.write(reinterpret_cast<const char*>(&v), 4); };
  auto u16 = [&](uint16_t v) { out.write(reinterpret_cast<const char*>(&v), 2); };
  out.write("RIFF", 4);
  u32(36 + data);
  out.write("WAVEfmt ", 8);
  u32(16);
  u16(static_cast<uint16_t>(format));
  u16(static_cast<uint16_t>(channels));
  u32(static_cast<uint32_t>(rate));
  u32(static_cast<uint32_t>(rate * channels * bytes_per_sample));
  u16(static_cast<uint16_t>(channels * bytes_per_sample));
  u16(static_cast<uint16_t>(8 * bytes_per_sample));
  out.write("data", 4);
  u32(data);
  out.write(static_cast<const char*>(samples), data);
}

// 16-bit PCM, interleaved over `channels`.
inline void WriteWav(const std::string& path, const std::vector<int16_t>& interleaved, int channels,
                     int rate) {
  WriteWav(path, interleaved.data(), interleaved.size(), 2, 1, channels, rate);
}

}  // namespace lipsync::testing
