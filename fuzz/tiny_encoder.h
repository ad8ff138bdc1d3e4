// An audio encoder with the real one's shapes ([N,1,80,16] -> [N,512]: one dense layer over the
// window and a tanh), written once with the ONNX protos and run on ONNX Runtime's CPU provider with
// one thread: small enough that the audio targets spend their time in the feature code around it.
#pragma once

#include <onnx/onnx_pb.h>

#include <filesystem>
#include <memory>
#include <random>
#include <string>

#include "fuzz_check.h"
#include "fuzz_input.h"
#include "lipsync/audio.h"

namespace lipsync::fuzz {

inline onnx::ModelProto TinyEncoderModel() {
  onnx::ModelProto model;
  model.set_ir_version(7);
  model.set_producer_name("lipsync_fuzz");
  model.add_opset_import()->set_version(13);
  onnx::GraphProto* g = model.mutable_graph();
  g->set_name("tiny_audio_encoder");
  auto value = [](onnx::ValueInfoProto* v, const char* name, std::initializer_list<int64_t> dims) {
    v->set_name(name);
    auto* type = v->mutable_type()->mutable_tensor_type();
    type->set_elem_type(onnx::TensorProto::FLOAT);
    for (int64_t d : dims) {
      if (d < 0) {
        type->mutable_shape()->add_dim()->set_dim_param("N");
      } else {
        type->mutable_shape()->add_dim()->set_dim_value(d);
      }
    }
  };
  value(g->add_input(), "mel", {-1, 1, 80, 16});
  value(g->add_output(), "embedding", {-1, 512});
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto weights = [&](const char* name, std::initializer_list<int64_t> dims, float scale) {
    onnx::TensorProto* t = g->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    int64_t n = 1;
    for (int64_t d : dims) {
      t->add_dims(d);
      n *= d;
    }
    for (int64_t i = 0; i < n; ++i) t->add_float_data(scale * normal(rng));
  };
  weights("w", {80 * 16, 512}, 0.03f);
  weights("b", {512}, 0.1f);
  auto node = [&](const char* op, std::initializer_list<const char*> in, const char* out) {
    onnx::NodeProto* n = g->add_node();
    n->set_op_type(op);
    for (const char* name : in) n->add_input(name);
    n->add_output(out);
    return n;
  };
  onnx::AttributeProto* axis = node("Flatten", {"mel"}, "flat")->add_attribute();
  axis->set_name("axis");
  axis->set_type(onnx::AttributeProto::INT);
  axis->set_i(1);
  node("MatMul", {"flat", "w"}, "mm");
  node("Add", {"mm", "b"}, "pre");
  node("Tanh", {"pre"}, "embedding");
  return model;
}

// The process's one encoder, made on first use.
inline AudioEncoder& TinyEncoder() {
  static const std::unique_ptr<AudioEncoder> encoder = [] {
    const std::string path = ScratchPath("encoder.onnx");
    const std::string bytes = TinyEncoderModel().SerializeAsString();
    WriteBytes(path, bytes.data(), bytes.size());
    EngineOptions options;
    options.backend = "ort";
    options.intra_op_threads = 1;
    options.max_batch = 64;
    auto made = AudioEncoder::Create(path, options);
    std::filesystem::remove(path);
    if (!made.ok()) Broken("the tiny audio encoder", made.status().ToString());
    return std::move(*made);
  }();
  return *encoder;
}

}  // namespace lipsync::fuzz
