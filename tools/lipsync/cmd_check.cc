// `lipsync check`: runs the engine on inputs from .npy files and compares the output with an
// expected .npy (e.g. PyTorch's), printing the largest absolute difference.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "engine_flags.h"
#include "lipsync/npy.h"
#include "random_inputs.h"

namespace lipsync::cli {
namespace {

struct CheckArgs {
  EngineFlags engine;
  std::vector<std::string> inputs;  // NAME=FILE or FILE (in model order)
  std::string expect;
  std::string save_output;
  double tolerance = 1e-4;
  bool json = false;
};

Result<std::vector<Tensor>> LoadInputs(const Engine& engine,
                                       const std::vector<std::string>& specs) {
  const auto& declared = engine.info().inputs;
  if (specs.size() != declared.size()) {
    return InvalidArgument("the model has " + std::to_string(declared.size()) + " inputs, got " +
                           std::to_string(specs.size()) + " --input files");
  }
  std::vector<Tensor> tensors(declared.size());
  std::vector<bool> given(declared.size(), false);
  for (size_t i = 0; i < specs.size(); ++i) {
    size_t index = i;
    std::string path = specs[i];
    if (const auto eq = specs[i].find('='); eq != std::string::npos) {
      LIPSYNC_ASSIGN_OR_RETURN(index, engine.InputIndex(specs[i].substr(0, eq)));
      path = specs[i].substr(eq + 1);
    }
    if (given[index]) return InvalidArgument("input '" + declared[index].name + "' given twice");
    given[index] = true;
    LIPSYNC_ASSIGN_OR_RETURN(tensors[index], LoadNpy(path));
  }
  return tensors;
}

int RunCheck(const CheckArgs& args) {
  auto options = ToEngineOptions(args.engine);
  if (!options.ok()) return ReportError(options.status());
  auto engine = Engine::Create(args.engine.model, *options);
  if (!engine.ok()) return ReportError(engine.status());
  auto inputs = LoadInputs(**engine, args.inputs);
  if (!inputs.ok()) return ReportError(inputs.status());
  auto outputs = (*engine)->Run(Views(*inputs));
  if (!outputs.ok()) return ReportError(outputs.status());
  const Tensor& out = (*outputs)[0];
  if (!args.save_output.empty()) {
    Status saved = SaveNpy(args.save_output, out.view());
    if (!saved.ok()) return ReportError(saved);
  }
  if (args.expect.empty()) {
    std::printf("ran %s: output %s\n", args.engine.model.c_str(),
                ShapeToString(out.shape()).c_str());
    return 0;
  }
  auto expected = LoadNpy(args.expect);
  if (!expected.ok()) return ReportError(expected.status());
  if (expected->shape() != out.shape() || expected->dtype() != DataType::kFloat32 ||
      out.dtype() != DataType::kFloat32) {
    return ReportError(InvalidArgument(
        "expected output '" + args.expect + "' is " + DataTypeName(expected->dtype()) + " " +
        ShapeToString(expected->shape()) + " but the engine produced " + DataTypeName(out.dtype()) +
        " " + ShapeToString(out.shape())));
  }
  double max_diff = 0, sum_diff = 0;
  const float* a = out.data_as<float>();
  const float* b = expected->data_as<float>();
  const int64_t n = out.element_count();
  for (int64_t i = 0; i < n; ++i) {
    const double d = std::fabs(static_cast<double>(a[i]) - b[i]);
    if (std::isnan(d)) {
      max_diff = d;
      break;
    }
    max_diff = std::max(max_diff, d);
    sum_diff += d;
  }
  const bool ok = max_diff <= args.tolerance;  // false for NaN
  if (args.json) {
    nlohmann::json j = {{"max_abs_diff", max_diff},    {"mean_abs_diff", sum_diff / n},
                        {"output_shape", out.shape()}, {"ok", ok},
                        {"tolerance", args.tolerance}, {"backend", (*engine)->info().backend}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("output %s: max abs diff %.3g, mean abs diff %.3g (tolerance %.3g): %s\n",
                ShapeToString(out.shape()).c_str(), max_diff, sum_diff / n, args.tolerance,
                ok ? "OK" : "MISMATCH");
  }
  return ok ? 0 : 1;
}

}  // namespace

void AddCheckCommand(CLI::App& app, int* exit_code) {
  auto* cmd = app.add_subcommand(
      "check", "Run the engine on .npy inputs and compare with an expected output");
  auto args = std::make_shared<CheckArgs>();
  AddEngineFlags(cmd, &args->engine);
  cmd->add_option("--input,-i", args->inputs, "NAME=FILE.npy (or FILE.npy in model order)")
      ->required();
  cmd->add_option("--expect", args->expect, "expected output .npy");
  cmd->add_option("--save-output", args->save_output, "write the engine's output .npy");
  cmd->add_option("--tolerance", args->tolerance, "largest allowed absolute difference")
      ->capture_default_str();
  cmd->add_flag("--json", args->json, "print the result as JSON");
  cmd->callback([=] { *exit_code = RunCheck(*args); });
}

}  // namespace lipsync::cli
