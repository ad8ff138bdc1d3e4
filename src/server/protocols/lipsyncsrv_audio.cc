#include "server/protocols/lipsyncsrv_audio.h"

#include <openssl/evp.h>

#include <cctype>
#include <cstring>
#include <string>

#include "server/protocols/composite_audio.h"

namespace lipsync::server {
namespace {

bool IsBase64Char(unsigned char c) { return std::isalnum(c) || c == '+' || c == '/'; }

// "audio_override (N characters, read as base64 PCM)": how errors name it, without its text.
std::string Named(const std::string& text) {
  return "audio_override (" + std::to_string(text.size()) +
         " characters, read as base64 int16 PCM because it is longer than 100)";
}

// Repeats each of `rows` x 16 values 16 times along a new last axis: [rows*16] -> [.., 16, 16].
void Tile16(const float* values, size_t count, float* out) {
  for (size_t v = 0; v < count; ++v) {
    for (int k = 0; k < 16; ++k) out[v * 16 + static_cast<size_t>(k)] = values[v];
  }
}

}  // namespace

bool IsPcmOverride(const std::string& audio_override) {
  return audio_override.size() >= kPcmOverrideMinChars;
}

Result<std::vector<float>> DecodePcmOverride(const std::string& text) {
  std::string compact;
  compact.reserve(text.size());
  size_t padding = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (std::isspace(c)) continue;
    if (c == '=') {
      ++padding;
    } else if (!IsBase64Char(c) || padding > 0) {
      return InvalidArgument(
          Named(text) + " is not valid base64: " +
          (padding > 0 ? "data after the '=' padding" : "a character outside the base64 alphabet") +
          " at position " + std::to_string(i));
    }
    compact.push_back(static_cast<char>(c));
  }
  if (compact.size() % 4 != 0 || padding > 2) {
    return InvalidArgument(Named(text) + " is not valid base64: " + std::to_string(compact.size()) +
                           " base64 characters, not whole groups of 4 with at most 2 '=' at the "
                           "end");
  }
  std::string bytes(compact.size() / 4 * 3, '\0');
  const int decoded = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(bytes.data()),
                                      reinterpret_cast<const unsigned char*>(compact.data()),
                                      static_cast<int>(compact.size()));
  if (decoded < 0) return InvalidArgument(Named(text) + " is not valid base64");
  bytes.resize(static_cast<size_t>(decoded) - padding);
  if (bytes.size() % 2 != 0) {
    return InvalidArgument(Named(text) + " decodes to " + std::to_string(bytes.size()) +
                           " bytes, not a whole number of 16-bit samples");
  }
  if (bytes.empty()) return InvalidArgument(Named(text) + " holds no samples");
  std::vector<float> pcm(kPcmOverrideSamples, 0.0f);
  const size_t samples = std::min(bytes.size() / 2, kPcmOverrideSamples);
  for (size_t i = 0; i < samples; ++i) {
    int16_t v;
    std::memcpy(&v, bytes.data() + 2 * i, 2);  // little-endian, as on every host we build for
    pcm[i] = static_cast<float>(v) / 32767.0f;
  }
  return pcm;
}

Result<Tensor> PcmOverrideWindow(AudioEncoder& encoder, const std::vector<float>& pcm_24k) {
  LIPSYNC_ASSIGN_OR_RETURN(std::vector<float> pcm,
                           ResampleAudio(pcm_24k, kPcmOverrideRate, kAudioSampleRate));
  // 16 frames at 16 kHz: exactly the placed chunk of one output frame with 8 frames before it.
  const std::vector<float> chunk =
      PlaceCompositeChunk(pcm.data(), pcm.size(), kCompositeAudioLead, 1);
  auto window = CompositeAudioWindows(encoder, chunk.data(), chunk.size(), 1, kCompositeAudioLead);
  if (!window.ok()) return window.status().WithContext("audio_override");
  return window;
}

Result<Tensor> PythonPcmOverrideWindow(const std::vector<float>& pcm_24k) {
  LIPSYNC_ASSIGN_OR_RETURN(Tensor mel, MelSpectrogram(pcm_24k.data(), pcm_24k.size()));
  const int64_t frames = mel.shape()[1];
  if (frames < 16) return InvalidArgument("audio_override is too short for 16 mel frames");
  const int64_t start = (frames - 16) / 2;
  Tensor out = Tensor::Uninitialized(DataType::kFloat32, {1, 32, 16, 16});
  std::vector<float> values(32 * 16);
  for (int band = 0; band < 32; ++band) {
    for (int t = 0; t < 16; ++t) {
      values[static_cast<size_t>(band * 16 + t)] = mel.data_as<float>()[band * frames + start + t];
    }
  }
  Tile16(values.data(), values.size(), out.data_as<float>());
  return out;
}

Result<Tensor> PythonSequenceWindows(const Tensor& sequence, const std::vector<int64_t>& frames) {
  const int64_t rows = sequence.shape()[0];
  Tensor out =
      Tensor::Uninitialized(DataType::kFloat32, {static_cast<int64_t>(frames.size()), 32, 16, 16});
  for (size_t k = 0; k < frames.size(); ++k) {
    if (frames[k] < 0 || frames[k] >= rows) {
      return InvalidArgument("frame " + std::to_string(frames[k]) + " has no row in the " +
                             std::to_string(rows) + "-row audio feature sequence");
    }
    Tile16(sequence.data_as<float>() + frames[k] * 512, 512, out.data_as<float>() + k * 8192);
  }
  return out;
}

}  // namespace lipsync::server
