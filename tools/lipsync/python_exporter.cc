// The Python checkpoint exporter: its output goes to a log file beside the ONNX file, whose end is
// quoted when the export fails.
#include "python_exporter.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "core/platform.h"

namespace lipsync::cli {
namespace {

namespace fs = std::filesystem;

std::string LogTail(const std::string& path, size_t max_chars = 2000) {
  std::ifstream in(platform::PathFromUtf8(path), std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  if (text.size() > max_chars) text = "..." + text.substr(text.size() - max_chars);
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

}  // namespace

PythonExporterOptions VerifiedByThisProgram() {
  PythonExporterOptions options;
  options.verify_engine = platform::ExecutablePath();
  return options;
}

std::string PythonToolsDir() {
  if (const char* dir = std::getenv("LIPSYNC_PYTHON_DIR"); dir && *dir) return dir;
  return std::string(LIPSYNC_SOURCE_DIR) + "/python";
}

std::string ChildPythonPath(const std::string& python_dir) {
  std::string path = python_dir;
  if (const char* rest = std::getenv("PYTHONPATH"); rest && *rest) {
    path.append(1, platform::kPathListSeparator).append(rest);
  }
  return path;
}

Status ExportCheckpointWithPython(const std::string& checkpoint, const std::string& out_onnx,
                                  const CheckpointExportOptions& export_options,
                                  const PythonExporterOptions& options) {
  const std::string python_dir = options.python_dir.empty() ? PythonToolsDir() : options.python_dir;
  std::error_code ec;
  const fs::path script = platform::PathFromUtf8(python_dir) / "lipsync" / "export.py";
  if (!fs::is_regular_file(script, ec)) {
    return NotFound("the checkpoint exporter (lipsync/export.py) is not in '" + python_dir +
                    "' (set LIPSYNC_PYTHON_DIR)");
  }
  const std::string python = options.python.empty() ? platform::DefaultPython() : options.python;
  std::vector<std::string> args = {python,
                                   "-m",
                                   "lipsync.export",
                                   "--checkpoint",
                                   checkpoint,
                                   "--mode",
                                   "ave",
                                   "--size",
                                   std::to_string(export_options.size),
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
  const fs::path log_path = platform::PathFromUtf8(log);
  auto code = platform::RunAndWait(args, {{"PYTHONPATH", ChildPythonPath(python_dir)}}, log);
  if (!code.ok()) {
    fs::remove(log_path, ec);
    return Unavailable("cannot run '" + python + "' to export the checkpoint '" + checkpoint + "'");
  }
  const std::string tail = LogTail(log);
  fs::remove(log_path, ec);
  const fs::path out_path = platform::PathFromUtf8(out_onnx);
  if (*code != 0 || !fs::is_regular_file(out_path, ec)) {
    fs::remove(out_path, ec);
    return InvalidArgument("exporting the UNet checkpoint '" + checkpoint +
                           "' to ONNX failed (exit " + std::to_string(*code) + "): " + tail);
  }
  return Status::Ok();
}

CheckpointExporter PythonCheckpointExporter(PythonExporterOptions options) {
  return [options = std::move(options)](const std::string& checkpoint, const std::string& out_onnx,
                                        const CheckpointExportOptions& export_options) {
    return ExportCheckpointWithPython(checkpoint, out_onnx, export_options, options);
  };
}

}  // namespace lipsync::cli
