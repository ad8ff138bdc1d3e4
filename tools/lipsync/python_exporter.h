// The `lipsync` command's checkpoint exporter: lipsync's Python exporter (`python -m
// lipsync.export`, which needs PyTorch) run as a child process. The library only calls the
// CheckpointExporter it is given; this program gives it this one.
#pragma once

#include <string>

#include "lipsync/avatar.h"

namespace lipsync::cli {

struct PythonExporterOptions {
  std::string python;         // interpreter; empty: platform::DefaultPython()
  std::string python_dir;     // holds the lipsync package; empty: PythonToolsDir()
  std::string verify_engine;  // lipsync binary that verifies the export; empty: not verified
};

// Options whose exports this running `lipsync` binary verifies.
PythonExporterOptions VerifiedByThisProgram();

// The folder of lipsync's Python package: $LIPSYNC_PYTHON_DIR when set, else the source's python/.
std::string PythonToolsDir();

// PYTHONPATH for a child that runs lipsync's Python tools: `python_dir`, then this process's.
std::string ChildPythonPath(const std::string& python_dir);

// Writes `out_onnx` from `checkpoint`; on failure the Status carries the end of the exporter's
// output.
Status ExportCheckpointWithPython(const std::string& checkpoint, const std::string& out_onnx,
                                  const CheckpointExportOptions& export_options,
                                  const PythonExporterOptions& options);

// ExportCheckpointWithPython with `options`, as the library's hook.
CheckpointExporter PythonCheckpointExporter(PythonExporterOptions options);

}  // namespace lipsync::cli
