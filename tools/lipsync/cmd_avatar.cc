// `lipsync avatar import` (a SyncTalk_2D dataset, a Go server model or a Python server's model
// package to an avatar folder) and `lipsync avatar check` (load, decode every frame, load both
// models).

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "core/platform.h"
#include "engine_flags.h"
#include "lipsync/avatar.h"
#include "python_exporter.h"

namespace lipsync::cli {
namespace {

struct ImportArgs {
  std::vector<std::string> from;  // {kind, path}
  std::string model_id;
  AvatarImportOptions options;
};

int RunImport(const ImportArgs& args) {
  const std::string& kind = args.from[0];
  const std::string& source = args.from[1];
  Result<Avatar> avatar =
      InvalidArgument("unknown source kind '" + kind +
                      "' (use synctalk DIR, go CONFIG.yaml or lipsyncsrv PACKAGE_DIR|PACKAGE.zip)");
  if (kind == "synctalk") {
    if (args.options.model.empty()) {
      return ReportError(InvalidArgument("--model is required with --from synctalk"));
    }
    if (!args.model_id.empty()) {
      return ReportError(InvalidArgument("--model-id only applies to --from go"));
    }
    avatar = ImportSyncTalkDataset(source, args.options);
  } else if (kind == "go") {
    if (args.model_id.empty()) {
      return ReportError(InvalidArgument("--model-id is required with --from go"));
    }
    avatar = ImportGoServerModel(source, args.model_id, args.options);
  } else if (kind == "lipsyncsrv") {
    if (!args.model_id.empty()) {
      return ReportError(InvalidArgument("--model-id only applies to --from go"));
    }
    // Without --model the package's checkpoint is exported, and verified by this binary.
    AvatarImportOptions options = args.options;
    options.export_checkpoint = PythonCheckpointExporter(VerifiedByThisProgram());
    avatar = ImportLipSyncSrvPackage(source, options);
  }
  if (!avatar.ok()) return ReportError(avatar.status());
  std::printf("wrote avatar '%s' to %s: %lld frames of %dx%d, %s\n",
              avatar->manifest().name.c_str(), avatar->dir().c_str(),
              static_cast<long long>(avatar->frame_count()), avatar->width(), avatar->height(),
              avatar->frames_are_video() ? "one video" : "image files");
  return 0;
}

struct CheckArgs {
  std::string dir;
  bool json = false;
  bool quick = false;
};

int RunCheck(const CheckArgs& args) {
  auto avatar = LoadAvatar(args.dir);
  if (!avatar.ok()) return ReportError(avatar.status());
  EngineOptions options;
  options.intra_op_threads = 1;
  Status models = CheckAvatarModels(*avatar, options);
  if (!models.ok()) return ReportError(models);
  if (!args.quick) {
    const bool tty = platform::StderrIsTerminal();
    Status frames = CheckAvatarFrames(*avatar, [&](int64_t done, int64_t total) {
      if (tty && (done % 25 == 0 || done == total)) {
        std::fprintf(stderr, "\rdecoding frames %lld/%lld", static_cast<long long>(done),
                     static_cast<long long>(total));
        if (done == total) std::fprintf(stderr, "\n");
      }
    });
    if (!frames.ok()) return ReportError(frames);
  }
  const auto& rects = avatar->crop_rects();
  int min_side = INT32_MAX, max_side = 0;
  for (const CropRect& r : rects) {
    min_side = std::min({min_side, r.width(), r.height()});
    max_side = std::max({max_side, r.width(), r.height()});
  }
  const AvatarManifest& m = avatar->manifest();
  if (args.json) {
    nlohmann::json out = {{"ok", true},
                          {"name", m.name},
                          {"fps", m.fps},
                          {"model_size", m.model_size},
                          {"frames", avatar->frame_count()},
                          {"width", avatar->width()},
                          {"height", avatar->height()},
                          {"frames_are_video", avatar->frames_are_video()},
                          {"model", avatar->model_path()},
                          {"audio_encoder", avatar->audio_encoder_path()},
                          {"crop_side_min", min_side},
                          {"crop_side_max", max_side},
                          {"frames_decoded", !args.quick}};
    std::printf("%s\n", out.dump(2).c_str());
  } else {
    std::printf("avatar '%s' in %s: OK\n", m.name.c_str(), avatar->dir().c_str());
    std::printf("  frames        %lld of %dx%d (%s)%s\n",
                static_cast<long long>(avatar->frame_count()), avatar->width(), avatar->height(),
                avatar->frames_are_video() ? "video" : "images",
                args.quick ? ", not decoded (--quick)" : ", all decode");
    std::printf("  fps           %g\n", m.fps);
    std::printf("  face crops    %d to %d pixels a side\n", min_side, max_side);
    std::printf("  model         %s (%dx%d faces)\n", avatar->model_path().c_str(), m.model_size,
                m.model_size);
    std::printf("  audio encoder %s\n", avatar->audio_encoder_path().c_str());
  }
  return 0;
}

}  // namespace

void AddAvatarCommand(CLI::App& app, int* exit_code) {
  auto* avatar = app.add_subcommand("avatar", "Import and check avatar folders");
  avatar->require_subcommand(1);

  auto* import = avatar->add_subcommand(
      "import",
      "Make an avatar folder from a SyncTalk_2D dataset, a Go server model or a Python "
      "server's model package");
  auto iargs = std::make_shared<ImportArgs>();
  import
      ->add_option("--from", iargs->from,
                   "synctalk DATASET_DIR | go CONFIG.yaml | lipsyncsrv PACKAGE_DIR|PACKAGE.zip")
      ->expected(2)
      ->required();
  import->add_option("--out,-o", iargs->options.out_dir, "the avatar folder to create")->required();
  import->add_option(
      "--model,-m", iargs->options.model,
      "UNet ONNX (go: defaults to the config's model_path; lipsyncsrv: to the package's "
      "checkpoint, exported)");
  import->add_option("--encoder", iargs->options.audio_encoder, "audio encoder ONNX")->required();
  import->add_option("--model-id", iargs->model_id, "go: the model's key under models:");
  import->add_option("--name", iargs->options.name, "avatar name (default: folder or model id)");
  import->add_option("--fps", iargs->options.fps, "frame rate of the avatar's video")
      ->capture_default_str();
  import->callback([=] { *exit_code = RunImport(*iargs);
});

auto* check = avatar->add_subcommand(
    "check", "Validate an avatar folder: files, rectangles, every frame and both models");
auto cargs = std::make_shared<CheckArgs>();
check->add_option("dir", cargs->dir, "avatar folder")->required();
check->add_flag("--json", cargs->json, "print the summary as JSON");
check->add_flag("--quick", cargs->quick, "skip decoding every frame");
check->callback([=] { *exit_code = RunCheck(*cargs); });
}  // namespace lipsync::cli

}  // namespace lipsync::cli
