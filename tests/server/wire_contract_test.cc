// The compatibility services' wire contracts as the server compiles them, against a table written
// by hand from the users' own protos (cvoalex/webcodectest at 526c12b: the Go server's
// go-monolithic-server/proto/monolithic.proto and the Python server's
// old/old_fast_service/lipsyncsrv.proto). Every client in the other tests is generated from the
// project's protos, so only this table catches a field number, type, label or name that drifted
// from what the users' clients send.
#include <google/protobuf/descriptor.h>
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "lipsyncsrv/lipsyncsrv.grpc.pb.h"
#include "monolithic/monolithic.grpc.pb.h"

namespace lipsync::server {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::FileDescriptor;

enum class Label { kSingular, kOptional, kRepeated };  // kOptional: proto3 `optional`

struct Field {
  const char* name;
  int number;
  FieldDescriptor::Type type;
  Label label;
  const char* message_type = "";  // full name, for message fields
};

struct Message {
  const char* name;
  std::vector<Field> fields;
};

struct Method {
  const char* name;
  const char* input;
  const char* output;
  bool client_streaming = false;
  bool server_streaming = false;
};

struct Contract {
  const char* package;
  const char* service;
  std::vector<Method> methods;
  std::vector<Message> messages;
};

constexpr auto kString = FieldDescriptor::TYPE_STRING;
constexpr auto kBytes = FieldDescriptor::TYPE_BYTES;
constexpr auto kInt32 = FieldDescriptor::TYPE_INT32;
constexpr auto kInt64 = FieldDescriptor::TYPE_INT64;
constexpr auto kFloat = FieldDescriptor::TYPE_FLOAT;
constexpr auto kBool = FieldDescriptor::TYPE_BOOL;
constexpr auto kMessage = FieldDescriptor::TYPE_MESSAGE;
constexpr auto kOne = Label::kSingular;
constexpr auto kOptional = Label::kOptional;
constexpr auto kRepeated = Label::kRepeated;

// go-monolithic-server/proto/monolithic.proto
const Contract kMonolithic = {
    "monolithic",
    "MonolithicService",
    {{"InferBatchComposite", "CompositeBatchRequest", "CompositeBatchResponse"},
     {"ListModels", "ListModelsRequest", "ListModelsResponse"},
     {"LoadModel", "LoadModelRequest", "LoadModelResponse"},
     {"UnloadModel", "UnloadModelRequest", "UnloadModelResponse"},
     {"GetModelStats", "GetModelStatsRequest", "GetModelStatsResponse"},
     {"Health", "HealthRequest", "HealthResponse"}},
    {{"CompositeBatchRequest",
      {{"model_id", 1, kString, kOne},
       {"visual_frames", 2, kBytes, kOne},
       {"raw_audio", 3, kBytes, kOne},
       {"audio_features", 4, kBytes, kOne},
       {"batch_size", 5, kInt32, kOne},
       {"start_frame_idx", 6, kInt32, kOne},
       {"sample_rate", 7, kInt32, kOne}}},
     {"CompositeBatchResponse",
      {{"composited_frames", 1, kBytes, kRepeated},
       {"inference_time_ms", 2, kFloat, kOne},
       {"composite_time_ms", 3, kFloat, kOne},
       {"total_time_ms", 4, kFloat, kOne},
       {"audio_processing_ms", 5, kFloat, kOne},
       {"model_loaded", 6, kBool, kOne},
       {"model_load_time_ms", 7, kFloat, kOne},
       {"success", 8, kBool, kOne},
       {"error", 9, kString, kOne},
       {"gpu_id", 10, kInt32, kOne}}},
     {"ListModelsRequest", {}},
     {"ListModelsResponse", {{"models", 1, kMessage, kRepeated, "monolithic.ModelInfo"}}},
     {"ModelInfo",
      {{"model_id", 1, kString, kOne},
       {"loaded", 2, kBool, kOne},
       {"gpu_id", 3, kInt32, kOne},
       {"memory_mb", 4, kInt64, kOne},
       {"request_count", 5, kInt32, kOne},
       {"avg_inference_ms", 6, kFloat, kOne}}},
     {"LoadModelRequest", {{"model_id", 1, kString, kOne}, {"preferred_gpu", 2, kInt32, kOne}}},
     {"LoadModelResponse",
      {{"success", 1, kBool, kOne},
       {"error", 2, kString, kOne},
       {"gpu_id", 3, kInt32, kOne},
       {"load_time_ms", 4, kFloat, kOne}}},
     {"UnloadModelRequest", {{"model_id", 1, kString, kOne}}},
     {"UnloadModelResponse", {{"success", 1, kBool, kOne}, {"error", 2, kString, kOne}}},
     {"GetModelStatsRequest", {}},
     {"GetModelStatsResponse", {{"models", 1, kMessage, kRepeated, "monolithic.ModelStats"}}},
     {"ModelStats",
      {{"model_id", 1, kString, kOne},
       {"loaded", 2, kBool, kOne},
       {"gpu_id", 3, kInt32, kOne},
       {"memory_mb", 4, kInt64, kOne},
       {"request_count", 5, kInt32, kOne},
       {"total_inference_ms", 6, kInt64, kOne},
       {"avg_inference_ms", 7, kFloat, kOne},
       {"last_used_timestamp", 8, kInt64, kOne}}},
     {"HealthRequest", {}},
     {"HealthResponse",
      {{"healthy", 1, kBool, kOne},
       {"loaded_models", 2, kInt32, kOne},
       {"max_models", 3, kInt32, kOne},
       {"gpu_ids", 4, kInt32, kRepeated},
       {"gpu_memory_used_gb", 5, kFloat, kRepeated}}}}};

// old/old_fast_service/lipsyncsrv.proto
const Contract kLipSyncSrv = {
    "lipsyncsrv",
    "LipSyncService",
    {{"GenerateInference", "InferenceRequest", "InferenceResponse"},
     {"GenerateBatchInference", "BatchInferenceRequest", "BatchInferenceResponse"},
     {"StreamInference", "InferenceRequest", "InferenceResponse", true, true},
     {"LoadModel", "LoadModelRequest", "LoadModelResponse"}},
    {{"InferenceRequest",
      {{"model_name", 1, kString, kOne},
       {"frame_id", 2, kInt32, kOne},
       {"audio_override", 3, kString, kOptional}}},
     {"InferenceResponse",
      {{"success", 1, kBool, kOne},
       {"prediction_data", 2, kBytes, kOne},
       {"bounds", 3, kFloat, kRepeated},
       {"processing_time_ms", 4, kInt32, kOne},
       {"model_name", 5, kString, kOne},
       {"frame_id", 6, kInt32, kOne},
       {"auto_loaded", 7, kBool, kOne},
       {"prediction_shape", 8, kString, kOne},
       {"error", 9, kString, kOptional}}},
     {"BatchInferenceRequest",
      {{"model_name", 1, kString, kOne},
       {"frame_ids", 2, kInt32, kRepeated},
       {"audio_override", 3, kString, kOptional}}},
     {"BatchInferenceResponse",
      {{"responses", 1, kMessage, kRepeated, "lipsyncsrv.InferenceResponse"},
       {"total_processing_time_ms", 2, kInt32, kOne}}},
     {"LoadModelRequest",
      {{"model_name", 1, kString, kOne},
       {"package_path", 2, kString, kOne},
       {"audio_override", 3, kString, kOptional}}},
     {"LoadModelResponse",
      {{"success", 1, kBool, kOne},
       {"model_name", 2, kString, kOne},
       {"message", 3, kString, kOne},
       {"initialization_time_ms", 4, kInt32, kOne},
       {"error", 5, kString, kOptional}}}}};

std::string LabelName(Label label) {
  switch (label) {
    case Label::kSingular:
      return "singular";
    case Label::kOptional:
      return "optional";
    case Label::kRepeated:
      return "repeated";
  }
  return "?";
}

Label LabelOf(const FieldDescriptor& f) {
  if (f.is_repeated()) return Label::kRepeated;
  return f.has_optional_keyword() ? Label::kOptional : Label::kSingular;
}

// Every difference between the compiled file and the contract, one line each.
std::vector<std::string> Differences(const FileDescriptor& file, const Contract& want) {
  std::vector<std::string> out;
  if (file.package() != want.package) {
    out.push_back("package is '" + file.package() + "', not '" + want.package + "'");
  }
  if (file.syntax() != FileDescriptor::SYNTAX_PROTO3) out.push_back(file.name() + " is not proto3");
  const std::string prefix = std::string(want.package) + ".";
  const auto* service = file.FindServiceByName(want.service);
  if (service == nullptr) {
    out.push_back("no service " + prefix + want.service);
  } else {
    if (service->method_count() != static_cast<int>(want.methods.size())) {
      out.push_back(service->full_name() + " has " + std::to_string(service->method_count()) +
                    " methods, not " + std::to_string(want.methods.size()));
    }
    for (const Method& m : want.methods) {
      const auto* got = service->FindMethodByName(m.name);
      const std::string what = service->full_name() + "." + m.name;
      if (got == nullptr) {
        out.push_back("no method " + what);
        continue;
      }
      if (got->input_type()->full_name() != prefix + m.input) {
        out.push_back(what + " takes " + got->input_type()->full_name());
      }
      if (got->output_type()->full_name() != prefix + m.output) {
        out.push_back(what + " returns " + got->output_type()->full_name());
      }
      if (got->client_streaming() != m.client_streaming ||
          got->server_streaming() != m.server_streaming) {
        out.push_back(what + " streams differently");
      }
    }
  }
  std::set<std::string> listed;
  for (const Message& m : want.messages) {
    listed.insert(m.name);
    const Descriptor* d = file.FindMessageTypeByName(m.name);
    if (d == nullptr) {
      out.push_back("no message " + prefix + m.name);
      continue;
    }
    if (d->field_count() != static_cast<int>(m.fields.size())) {
      out.push_back(d->full_name() + " has " + std::to_string(d->field_count()) + " fields, not " +
                    std::to_string(m.fields.size()));
    }
    for (const Field& f : m.fields) {
      const FieldDescriptor* got = d->FindFieldByNumber(f.number);
      const std::string what = d->full_name() + " field " + std::to_string(f.number);
      if (got == nullptr) {
        out.push_back("no " + what + " (" + f.name + ")");
        continue;
      }
      if (got->name() != f.name) out.push_back(what + " is named '" + got->name() + "'");
      if (got->type() != f.type) {
        out.push_back(what + " is " + got->type_name() + ", not " +
                      FieldDescriptor::TypeName(f.type));
      }
      if (LabelOf(*got) != f.label) {
        out.push_back(what + " is " + LabelName(LabelOf(*got)) + ", not " + LabelName(f.label));
      }
      if (f.type == kMessage && got->type() == kMessage &&
          got->message_type()->full_name() != f.message_type) {
        out.push_back(what + " holds " + got->message_type()->full_name());
      }
      // proto3 packs repeated numbers unless told otherwise; both sides must agree.
      if (got->is_repeated() && got->is_packable() && !got->is_packed()) {
        out.push_back(what + " is not packed");
      }
    }
  }
  for (int i = 0; i < file.message_type_count(); ++i) {
    if (!listed.count(file.message_type(i)->name())) {
      out.push_back("message " + file.message_type(i)->full_name() + " is not in the contract");
    }
  }
  return out;
}

std::string Lines(const std::vector<std::string>& lines) {
  std::string text;
  for (const auto& l : lines) text += "\n  " + l;
  return text;
}

TEST(WireContract, MonolithicMatchesTheGoServersProto) {
  const auto diff =
      Differences(*monolithic::CompositeBatchRequest::descriptor()->file(), kMonolithic);
  EXPECT_TRUE(diff.empty()) << Lines(diff);
}

TEST(WireContract, LipSyncSrvMatchesThePythonServersProto) {
  const auto diff = Differences(*lipsyncsrv::InferenceRequest::descriptor()->file(), kLipSyncSrv);
  EXPECT_TRUE(diff.empty()) << Lines(diff);
}

// The comparison itself notices a drift: a contract with one field renumbered, retyped,
// relabelled and one method's streaming changed gives one line for each.
TEST(WireContract, ADriftIsReported) {
  Contract drifted = kLipSyncSrv;
  drifted.messages[0].fields[1].number = 7;     // frame_id
  drifted.messages[1].fields[3].type = kInt64;  // processing_time_ms
  drifted.messages[0].fields[2].label = kOne;   // audio_override
  drifted.methods[2].client_streaming = false;  // StreamInference
  const auto diff = Differences(*lipsyncsrv::InferenceRequest::descriptor()->file(), drifted);
  EXPECT_EQ(diff.size(), 4u) << Lines(diff);
  const std::string text = Lines(diff);
  for (const char* words : {"no lipsyncsrv.InferenceRequest field 7 (frame_id)",
                            "InferenceResponse field 4 is int32, not int64",
                            "InferenceRequest field 3 is optional, not singular",
                            "StreamInference streams differently"}) {
    EXPECT_NE(text.find(words), std::string::npos) << words << " not in" << text;
  }
}

}  // namespace
}  // namespace lipsync::server
