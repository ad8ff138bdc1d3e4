// A PyTorch UNet checkpoint to ONNX through lipsync's own Python exporter, run as a child process
// (PyTorch lives on the Python side only). Its output goes to a log file whose end is quoted when
// the export fails.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/platform.h"
#include "lipsync/avatar.h"

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

// PYTHONPATH led by `python_dir`, then what this process has.
std::string ChildPythonPath(const std::string& python_dir) {
  std::string path = python_dir;
  if (const char* rest = std::getenv("PYTHONPATH"); rest && *rest) {
    path.append(1, platform::kPathListSeparator).append(rest);
  }
  return path;
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
  auto code = platform::RunAndWait(args, {{"PYTHONPATH", ChildPythonPath(python_dir)}}, log);
  if (!code.ok()) {
    fs::remove(log, ec);
    return Unavailable("cannot run '" + python + "' to export the checkpoint '" + checkpoint + "'");
  }
  const std::string tail = LogTail(log);
  fs::remove(log, ec);
  if (*code != 0 || !fs::is_regular_file(out_onnx, ec)) {
    fs::remove(out_onnx, ec);
    return InvalidArgument("exporting the UNet checkpoint '" + checkpoint +
                           "' to ONNX failed (exit " + std::to_string(*code) + "): " + tail);
  }
  return Status::Ok();
}

}  // namespace lipsync
