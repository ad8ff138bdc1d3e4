// `lipsync frames-diff A B`: two folders of rendered frames (`render --frames-out`) compared pixel
// by pixel, e.g. a render on a GPU against the same render on the CPU. Exit 0 within the
// tolerance, 1 outside it, 2 when the folders cannot be compared.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "commands.h"
#include "engine_flags.h"
#include "lipsync/face.h"

namespace lipsync::cli {
namespace {

struct FramesDiffArgs {
  std::string a, b;
  int max_abs = 2;
  double min_within_one = 0.999;
  bool json = false;
};

struct FrameDiff {
  std::string name;
  int max_abs = 0;
  double mean_abs = 0;
  int64_t values = 0, within_one = 0;
};

// The image files of a folder, by name.
Result<std::set<std::string>> ImageNames(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return NotFound("'" + dir + "' is not a folder");
  std::set<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string ext = entry.path().extension().string();
    if (entry.is_regular_file() && (ext == ".png" || ext == ".jpg" || ext == ".jpeg")) {
      names.insert(entry.path().filename().string());
    }
  }
  if (ec) return Internal("cannot list '" + dir + "': " + ec.message());
  if (names.empty()) return InvalidArgument("'" + dir + "' holds no .png or .jpg frames");
  return names;
}

Result<FrameDiff> Compare(const FramesDiffArgs& args, const std::string& name) {
  LIPSYNC_ASSIGN_OR_RETURN(Image a, LoadImage(args.a + "/" + name));
  LIPSYNC_ASSIGN_OR_RETURN(Image b, LoadImage(args.b + "/" + name));
  if (a.width != b.width || a.height != b.height) {
    return InvalidArgument(name + " is " + std::to_string(a.width) + "x" +
                           std::to_string(a.height) + " in the first folder and " +
                           std::to_string(b.width) + "x" + std::to_string(b.height) +
                           " in the second");
  }
  FrameDiff d;
  d.name = name;
  int64_t sum = 0;
  for (size_t i = 0; i < a.bgr.size(); ++i) {
    const int diff = std::abs(static_cast<int>(a.bgr[i]) - static_cast<int>(b.bgr[i]));
    d.max_abs = std::max(d.max_abs, diff);
    sum += diff;
    d.within_one += diff <= 1 ? 1 : 0;
  }
  d.values = static_cast<int64_t>(a.bgr.size());
  d.mean_abs = d.values ? static_cast<double>(sum) / static_cast<double>(d.values) : 0.0;
  return d;
}

int RunFramesDiff(const FramesDiffArgs& args) {
  auto names_a = ImageNames(args.a);
  if (!names_a.ok()) return ReportError(names_a.status());
  auto names_b = ImageNames(args.b);
  if (!names_b.ok()) return ReportError(names_b.status());
  if (*names_a != *names_b) {
    std::vector<std::string> only;
    std::set_symmetric_difference(names_a->begin(), names_a->end(), names_b->begin(),
                                  names_b->end(), std::back_inserter(only));
    return ReportError(InvalidArgument(
        "the folders hold different frames (" + std::to_string(names_a->size()) + " and " +
        std::to_string(names_b->size()) + "); '" + only.front() + "' is in one only"));
  }
  std::vector<FrameDiff> frames;
  FrameDiff all;
  all.name = "all";
  double abs_sum = 0;
  for (const std::string& name : *names_a) {
    auto d = Compare(args, name);
    if (!d.ok()) return ReportError(d.status());
    all.max_abs = std::max(all.max_abs, d->max_abs);
    all.values += d->values;
    all.within_one += d->within_one;
    abs_sum += d->mean_abs * static_cast<double>(d->values);
    frames.push_back(std::move(*d));
  }
  all.mean_abs = all.values ? abs_sum / static_cast<double>(all.values) : 0.0;
  const double share = all.values ? static_cast<double>(all.within_one) / all.values : 1.0;
  const auto worst =
      std::max_element(frames.begin(), frames.end(),
                       [](const auto& x, const auto& y) { return x.mean_abs < y.mean_abs; });
  const bool within = all.max_abs <= args.max_abs && share >= args.min_within_one;
  if (args.json) {
    nlohmann::json json = {
        {"frames", frames.size()},
        {"max_abs", all.max_abs},
        {"mean_abs", all.mean_abs},
        {"share_within_1", share},
        {"worst_frame", worst->name},
        {"worst_frame_mean_abs", worst->mean_abs},
        {"worst_frame_max_abs", worst->max_abs},
        {"tolerance", {{"max_abs", args.max_abs}, {"min_share_within_1", args.min_within_one}}},
        {"within_tolerance", within}};
    std::printf("%s\n", json.dump(2).c_str());
  } else {
    std::printf(
        "%zu frames: max abs %d, mean abs %.4f, %.4f%% of values within 1; worst frame %s "
        "(mean abs %.4f, max abs %d)\n",
        frames.size(), all.max_abs, all.mean_abs, 100.0 * share, worst->name.c_str(),
        worst->mean_abs, worst->max_abs);
    std::printf("%s: tolerance max abs %d, at least %.4f%% within 1\n", within ? "OK" : "DIFFERENT",
                args.max_abs, 100.0 * args.min_within_one);
  }
  return within ? 0 : 1;
}

}  // namespace

void AddFramesDiffCommand(CLI::App& app, int* exit_code) {
  auto* cmd = app.add_subcommand(
      "frames-diff", "Compare two folders of frames (render --frames-out), pixel by pixel");
  auto args = std::make_shared<FramesDiffArgs>();
  cmd->add_option("a", args->a, "the first folder")->required();
  cmd->add_option("b", args->b, "the second folder, with the same file names")->required();
  cmd->add_option("--max-abs", args->max_abs, "largest difference of one 8-bit value allowed")
      ->capture_default_str()
      ->check(CLI::Range(0, 255));
  cmd->add_option("--min-within-1", args->min_within_one,
                  "share of values that must differ by at most 1")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_flag("--json", args->json, "print the result as JSON");
  cmd->footer("Exit status: 0 within the tolerance, 1 outside it, 2 when they cannot be compared.");
  cmd->callback([=] { *exit_code = RunFramesDiff(*args); });
}

}  // namespace lipsync::cli
