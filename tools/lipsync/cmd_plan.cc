// `lipsync plan`: compile a model into the native backends' execution plan and describe it.
#include <cstdio>

#include "commands.h"
#include "engine_flags.h"
#include "graph/compiler.h"

namespace lipsync::cli {

void AddPlanCommand(CLI::App& app, int* exit_code) {
  struct Flags {
    std::string model;
    bool summary_only = false;
    bool fusions = false;
  };
  auto flags = std::make_shared<Flags>();
  CLI::App* cmd = app.add_subcommand(
      "plan",
      "Compile a model for the native backends and print the plan: steps, fusions, "
      "arena vs naive activation memory, MACs");
  cmd->add_option("-m,--model", flags->model, "ONNX model file")->required();
  cmd->add_flag("--summary", flags->summary_only, "print only the totals, not every step");
  cmd->add_flag("--fusions", flags->fusions, "also list every fusion and fold");
  cmd->callback([flags, exit_code] {
    auto plan = graph::CompilePlanFromFile(flags->model);
    if (!plan.ok()) {
      *exit_code = ReportError(plan.status());
      return;
    }
    std::fputs(graph::PlanSummary(*plan, !flags->summary_only).c_str(), stdout);
    if (flags->fusions) {
      for (const auto& line : plan->fusions) std::printf("  %s\n", line.c_str());
    }
    *exit_code = 0;
  });
}

}  // namespace lipsync::cli
