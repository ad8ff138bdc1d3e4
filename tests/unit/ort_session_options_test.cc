// The ONNX Runtime session options an engine's OrtOptions stand for: spinning off adds its config
// entry, and the caller's own entry for it wins.
#include <gtest/gtest.h>
#include <onnxruntime_session_options_config_keys.h>

#include "backends/ort/session_options.h"

namespace lipsync {
namespace {

const char* const kSpin = kOrtSessionOptionsConfigAllowIntraOpSpinning;

TEST(OrtSessionOptions, SpinningIsOnnxRuntimesDefaultUnlessTurnedOff) {
  EngineOptions options;
  EXPECT_FALSE(BaseSessionOptions(options).HasConfigEntry(kSpin));
  options.ort.spinning = false;
  const Ort::SessionOptions idle = BaseSessionOptions(options);
  ASSERT_TRUE(idle.HasConfigEntry(kSpin));
  EXPECT_EQ(idle.GetConfigEntry(kSpin), "0");
}

TEST(OrtSessionOptions, TheCallersOwnSpinningEntryWins) {
  EngineOptions options;
  options.ort.spinning = false;
  options.ort.session_config = {{"session.set_denormal_as_zero", "1"}, {kSpin, "1"}};
  const Ort::SessionOptions so = BaseSessionOptions(options);
  EXPECT_EQ(so.GetConfigEntry(kSpin), "1");
  EXPECT_EQ(so.GetConfigEntry("session.set_denormal_as_zero"), "1");
}

}  // namespace
}  // namespace lipsync
