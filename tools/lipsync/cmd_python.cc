// `lipsync export`, `lipsync export-audio` and `lipsync compare`: front ends to the Python tools in
// python/lipsync, which need PyTorch. All arguments after the subcommand go to the Python module
// unchanged.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "commands.h"
#include "core/platform.h"
#include "python_exporter.h"

namespace lipsync::cli {
namespace {

// Replaces this process with `<default python> -m lipsync.<module> args...`.
int ExecPython(const std::string& module, const std::vector<std::string>& args) {
  const std::string dir = PythonToolsDir();
  if (!std::filesystem::exists(dir + "/lipsync/" + module + ".py")) {
    std::fprintf(stderr, "error: Python tools not found in %s (set LIPSYNC_PYTHON_DIR)\n",
                 dir.c_str());
    return 2;
  }
  platform::SetEnv("PYTHONPATH", ChildPythonPath(dir));
  if (!std::getenv("LIPSYNC_BIN")) platform::SetEnv("LIPSYNC_BIN", platform::ExecutablePath());
  const std::string python = platform::DefaultPython();
  std::vector<std::string> argv_s = {python, "-m", "lipsync." + module};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  const int status = platform::RunInPlace(argv_s);
  if (status == 127) std::fprintf(stderr, "error: cannot run %s\n", python.c_str());
  return status == 127 ? 2 : status;
}

void AddPassThrough(CLI::App& app, const std::string& name, const std::string& module,
                    const std::string& help, int* exit_code) {
  auto* cmd = app.add_subcommand(name, help + " (run `lipsync " + name + " --help` for options)");
  cmd->prefix_command();  // everything after the subcommand is passed through, --help included
  cmd->set_help_flag();
  cmd->callback([cmd, module, exit_code] { *exit_code = ExecPython(module, cmd->remaining()); });
}

}  // namespace

void AddPythonCommands(CLI::App& app, int* exit_code) {
  AddPassThrough(app, "export", "export",
                 "Export a PyTorch checkpoint to ONNX and verify it against the engine", exit_code);
  AddPassThrough(app, "export-audio", "export_audio",
                 "Export the audio encoder checkpoint to ONNX and verify it against the engine",
                 exit_code);
  AddPassThrough(app, "compare", "compare",
                 "PyTorch vs the C++ engine: accuracy and speed side by side", exit_code);
}

}  // namespace lipsync::cli
