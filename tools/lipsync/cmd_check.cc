// `lipsync check`: runs the engine on inputs from .npy files and compares the output with an
// expected .npy (e.g. PyTorch's), printing the largest absolute difference. With --reference (a
// run of higher precision, e.g. PyTorch in float64) the engine is judged by its distance to that
// reference against the expected output's own: two float32 runs with different summation orders
// differ by rounding that a badly conditioned model magnifies, so a fixed bound on their
// difference refuses exact exports of such models.
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
  std::string reference;
  std::string save_output;
  double tolerance = 1e-4;
  double error_ratio = 2.0;
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

struct Distance {
  double max_abs = 0;  // NaN when any difference is NaN
  double mean_abs = 0;
};

Distance Compare(const Tensor& a, const Tensor& b) {
  Distance d;
  double sum = 0;
  const float* x = a.data_as<float>();
  const float* y = b.data_as<float>();
  const int64_t n = a.element_count();
  for (int64_t i = 0; i < n; ++i) {
    const double diff = std::fabs(static_cast<double>(x[i]) - y[i]);
    if (std::isnan(diff)) return {diff, diff};
    d.max_abs = std::max(d.max_abs, diff);
    sum += diff;
  }
  d.mean_abs = n > 0 ? sum / n : 0.0;
  return d;
}

Status SameShape(const Tensor& given, const std::string& what, const Tensor& out) {
  if (given.shape() == out.shape() && given.dtype() == DataType::kFloat32 &&
      out.dtype() == DataType::kFloat32) {
    return Status::Ok();
  }
  return InvalidArgument(what + " is " + DataTypeName(given.dtype()) + " " +
                         ShapeToString(given.shape()) + " but the engine produced " +
                         DataTypeName(out.dtype()) + " " + ShapeToString(out.shape()));
}

int RunCheck(const CheckArgs& args) {
  if (!args.reference.empty() && args.expect.empty()) {
    return ReportError(
        InvalidArgument("--reference needs --expect: the reference judges the "
                        "engine against the expected output's own error"));
  }
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
  Status same = SameShape(*expected, "expected output '" + args.expect + "'", out);
  if (!same.ok()) return ReportError(same);
  const Distance diff = Compare(out, *expected);
  double bound = args.tolerance;
  double ok_distance = diff.max_abs;
  Distance engine_error, expected_error;
  if (!args.reference.empty()) {
    auto reference = LoadNpy(args.reference);
    if (!reference.ok()) return ReportError(reference.status());
    same = SameShape(*reference, "reference output '" + args.reference + "'", out);
    if (!same.ok()) return ReportError(same);
    engine_error = Compare(out, *reference);
    expected_error = Compare(*expected, *reference);
    bound = args.error_ratio * expected_error.max_abs + args.tolerance;
    ok_distance = engine_error.max_abs;
  }
  const bool ok = ok_distance <= bound;  // false for NaN
  if (args.json) {
    nlohmann::json j = {{"max_abs_diff", diff.max_abs},        {"mean_abs_diff", diff.mean_abs},
                        {"output_shape", out.shape()},         {"ok", ok},
                        {"tolerance", args.tolerance},         {"bound", bound},
                        {"backend", (*engine)->info().backend}};
    if (!args.reference.empty()) {
      j["engine_error"] = engine_error.max_abs;
      j["expected_error"] = expected_error.max_abs;
      j["error_ratio"] = args.error_ratio;
    }
    std::printf("%s\n", j.dump().c_str());
  } else if (args.reference.empty()) {
    std::printf("output %s: max abs diff %.3g, mean abs diff %.3g (tolerance %.3g): %s\n",
                ShapeToString(out.shape()).c_str(), diff.max_abs, diff.mean_abs, args.tolerance,
                ok ? "OK" : "MISMATCH");
  } else {
    std::printf(
        "output %s: max abs diff to the reference: engine %.3g, expected %.3g (bound %g x %.3g + "
        "%.3g = %.3g): %s; engine to expected: max abs diff %.3g, mean abs diff %.3g\n",
        ShapeToString(out.shape()).c_str(), engine_error.max_abs, expected_error.max_abs,
        args.error_ratio, expected_error.max_abs, args.tolerance, bound, ok ? "OK" : "MISMATCH",
        diff.max_abs, diff.mean_abs);
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
  cmd->add_option("--reference", args->reference,
                  "a higher-precision run of the same inputs (e.g. PyTorch float64): the engine "
                  "passes within --error-ratio times the expected output's distance to it, plus "
                  "--tolerance");
  cmd->add_option("--tolerance", args->tolerance,
                  "largest allowed absolute difference to --expect; with --reference, the "
                  "absolute part of the bound")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--error-ratio", args->error_ratio,
                  "with --reference: how many times the expected output's distance to it the "
                  "engine may be")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--json", args->json, "print the result as JSON");
  cmd->callback([=] { *exit_code = RunCheck(*args); });
}

}  // namespace lipsync::cli
