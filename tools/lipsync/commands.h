// The `lipsync` command's subcommands. Each Add*Command registers one subcommand on the app and
// arranges for its run function to be called when it is chosen; the function returns the exit code
// through `*exit_code`.
#pragma once

#include <CLI/CLI.hpp>

namespace lipsync::cli {

void AddInfoCommand(CLI::App& app, int* exit_code);
void AddInferCommand(CLI::App& app, int* exit_code);
void AddBenchCommand(CLI::App& app, int* exit_code);
void AddCheckCommand(CLI::App& app, int* exit_code);
void AddPythonCommands(CLI::App& app, int* exit_code);  // export, export-audio, compare
void AddPlanCommand(CLI::App& app, int* exit_code);     // the native backends' compiled plan
#ifdef LIPSYNC_WITH_AVATARS
void AddAvatarCommand(CLI::App& app, int* exit_code);      // avatar import | check
void AddRenderCommand(CLI::App& app, int* exit_code);      // speech + avatar -> video
void AddFramesDiffCommand(CLI::App& app, int* exit_code);  // two renders' frames compared
#endif
void AddFeaturesCommand(CLI::App& app, int* exit_code);  // audio file -> features
#ifdef LIPSYNC_WITH_SERVER
void AddServeCommand(CLI::App& app, int* exit_code);
void AddClientCommand(CLI::App& app, int* exit_code);
void AddLoadtestCommand(CLI::App& app, int* exit_code);
void AddCompareServersCommand(CLI::App& app, int* exit_code);  // old server vs lipsync
#endif

}  // namespace lipsync::cli
