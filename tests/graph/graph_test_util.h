// Helpers shared by the graph and reference-backend tests.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "demo_model.h"
#include "lipsync/engine.h"

namespace lipsync::testing {

// Folder with the models made by make_graph_models.py; the environment variable
// GRAPH_MODELS_DIR overrides the build's folder.
inline std::string GraphModel(const std::string& file) {
  const char* dir = std::getenv("GRAPH_MODELS_DIR");
  return std::string(dir ? dir : LIPSYNC_GRAPH_MODELS_DIR) + "/" + file;
}

using test_plans::DemoModel;  // demo_model.h

// Uniform [0,1) inputs of the engine's declared shapes with the batch filled in.
inline std::vector<Tensor> RandomInputs(const ModelInfo& info, int64_t batch, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(0.0f, 1.0f);
  std::vector<Tensor> out;
  for (const auto& in : info.inputs) {
    Shape shape = in.shape;
    if (shape[0] < 0) shape[0] = batch;
    Tensor t(DataType::kFloat32, shape);
    float* p = t.data_as<float>();
    for (int64_t i = 0; i < t.element_count(); ++i) p[i] = dist(rng);
    out.push_back(std::move(t));
  }
  return out;
}

inline std::vector<TensorView> Views(const std::vector<Tensor>& tensors) {
  std::vector<TensorView> views;
  for (const auto& t : tensors) views.push_back(t.view());
  return views;
}

// A fixture whose tests run with the working directory somewhere other than the models' folders,
// so a file resolved against the working directory instead of the model's folder is not found.
class ElsewhereTest : public ::testing::Test {
 protected:
  void SetUp() override {
    saved_ = std::filesystem::current_path();
    std::filesystem::current_path(std::filesystem::temp_directory_path());
  }
  void TearDown() override { std::filesystem::current_path(saved_); }

 private:
  std::filesystem::path saved_;
};

}  // namespace lipsync::testing
