// `lipsync`: the command-line front end. Each subcommand lives in its own cmd_*.cc file.
#include <CLI/CLI.hpp>
#include <algorithm>

#include "commands.h"
#include "core/platform.h"

int main(int argc, char** argv) {
  CLI::App app{"lipsync: fast inference for SyncTalk_2D-style lip-sync models", "lipsync"};
  app.set_version_flag("--version", LIPSYNC_VERSION);
  app.require_subcommand(1);
  int exit_code = 0;
  lipsync::cli::AddInfoCommand(app, &exit_code);
  lipsync::cli::AddInferCommand(app, &exit_code);
  lipsync::cli::AddBenchCommand(app, &exit_code);
  lipsync::cli::AddCheckCommand(app, &exit_code);
  lipsync::cli::AddPythonCommands(app, &exit_code);
  lipsync::cli::AddPlanCommand(app, &exit_code);
#ifdef LIPSYNC_WITH_AVATARS
  lipsync::cli::AddAvatarCommand(app, &exit_code);
  lipsync::cli::AddRenderCommand(app, &exit_code);
  lipsync::cli::AddFramesDiffCommand(app, &exit_code);
#endif
#ifdef LIPSYNC_WITH_FEATURES
  lipsync::cli::AddFeaturesCommand(app, &exit_code);
#endif
#ifdef LIPSYNC_WITH_SERVER
  lipsync::cli::AddServeCommand(app, &exit_code);
  lipsync::cli::AddClientCommand(app, &exit_code);
  lipsync::cli::AddLoadtestCommand(app, &exit_code);
  lipsync::cli::AddCompareServersCommand(app, &exit_code);
#endif
  try {
    // UTF-8 arguments (on Windows argv is in the ANSI code page); CLI11 wants them last first.
    std::vector<std::string> args = lipsync::platform::Utf8Arguments(argc, argv);
    args.erase(args.begin());
    std::reverse(args.begin(), args.end());
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return exit_code;
}
