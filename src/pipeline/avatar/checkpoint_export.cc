// A PyTorch UNet checkpoint to ONNX through lipsync's own Python exporter, run as a child process
// (PyTorch lives on the Python side only). Its output goes to a log file whose end is quoted when
// the export fails.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "lipsync/avatar.h"

extern char** environ;

namespace lipsync {
namespace {

namespace fs = std::filesystem;

std::string PythonDir(const CheckpointExportOptions& options) {
  if (!options.python_dir.empty()) return options.python_dir;
  if (const char* dir = std::getenv("LIPSYNC_PYTHON_DIR"); dir && *dir) return dir;
  return LIPSYNC_PYTHON_SOURCE_DIR;
}

std::string LogTail(const std::string& path, size_t max_chars = 2000) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  if (text.size() > max_chars) text = "..." + text.substr(text.size() - max_chars);
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

// The environment with PYTHONPATH led by `python_dir`.
std::vector<std::string> ChildEnvironment(const std::string& python_dir) {
  std::vector<std::string> env;
  std::string path = python_dir;
  for (char** e = environ; e && *e; ++e) {
    std::string entry(*e);
    if (entry.rfind("PYTHONPATH=", 0) == 0) {
      if (entry.size() > 11) path.append(":").append(entry, 11, std::string::npos);
      continue;
    }
    env.push_back(entry);
  }
  env.push_back("PYTHONPATH=" + path);
  return env;
}

std::vector<char*> Pointers(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (auto& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

}  // namespace

Status ExportUnetCheckpoint(const std::string& checkpoint, const std::string& out_onnx,
                            const CheckpointExportOptions& options) {
  const std::string python_dir = PythonDir(options);
  std::error_code ec;
  if (!fs::is_regular_file(fs::path(python_dir) / "lipsync" / "export.py", ec)) {
    return NotFound("the checkpoint exporter (lipsync/export.py) is not in '" + python_dir +
                    "' (set LIPSYNC_PYTHON_DIR)");
  }
  std::string python = options.python;
  if (python.empty()) python = fs::exists("/usr/bin/python3", ec) ? "/usr/bin/python3" : "python3";
  std::vector<std::string> args = {python,
                                   "-m",
                                   "lipsync.export",
                                   "--checkpoint",
                                   checkpoint,
                                   "--mode",
                                   "ave",
                                   "--size",
                                   std::to_string(options.size),
                                   "--out",
                                   out_onnx,
                                   "--threads",
                                   "1",
                                   "--single-file"};
  if (options.verify_engine.empty()) {
    args.push_back("--no-verify");
  } else {
    args.insert(args.end(), {"--engine", options.verify_engine});
  }
  const std::string log = out_onnx + ".export.log";
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  auto env_strings = ChildEnvironment(python_dir);
  auto argv = Pointers(args);
  auto envp = Pointers(env_strings);
  // A server blocks its stop signals in every thread; the exporter should not inherit that.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  pid_t pid = 0;
  const int spawned = posix_spawnp(&pid, python.c_str(), &actions, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (spawned != 0) {
    fs::remove(log, ec);
    return Unavailable("cannot run '" + python + "' to export the checkpoint '" + checkpoint + "'");
  }
  int wstatus = 0;
  while (waitpid(pid, &wstatus, 0) < 0) {
    if (errno != EINTR) return Internal("waiting for the checkpoint exporter failed");
  }
  const bool ok = WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0;
  const std::string tail = LogTail(log);
  fs::remove(log, ec);
  if (!ok || !fs::is_regular_file(out_onnx, ec)) {
    fs::remove(out_onnx, ec);
    return InvalidArgument(
        "exporting the UNet checkpoint '" + checkpoint + "' to ONNX failed (exit " +
        std::to_string(WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1) + "): " + tail);
  }
  return Status::Ok();
}

}  // namespace lipsync
