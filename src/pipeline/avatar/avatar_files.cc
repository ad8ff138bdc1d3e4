// The small files of an avatar: avatar.json, crop_rects.json and SyncTalk_2D landmark files.
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "lipsync/avatar.h"
#include "pipeline/avatar/avatar_internal.h"

namespace lipsync {
namespace {

using nlohmann::json;

// "line 3, column 14" of a byte offset, for JSON syntax errors.
std::string LineAndColumn(const std::string& text, size_t byte) {
  size_t line = 1, column = 1;
  for (size_t i = 0; i < byte && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
  }
  return "line " + std::to_string(line) + ", column " + std::to_string(column);
}

Result<json> ParseJsonFile(const std::string& path) {
  LIPSYNC_ASSIGN_OR_RETURN(std::string text, internal::ReadTextFile(path));
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    // e.byte is one past the offending character.
    return InvalidArgument("'" + path + "' is not valid JSON at " +
                           LineAndColumn(text, e.byte > 0 ? e.byte - 1 : 0));
  } catch (const json::out_of_range&) {  // the parser's one: a number past a double's range
    return InvalidArgument("'" + path + "' holds a number too large to read");
  } catch (const json::exception&) {  // its message may quote the file: not repeated
    return InvalidArgument("'" + path + "' is not valid JSON");
  }
}

std::string Shorten(const json& value) {
  std::string s = value.dump();
  return s.size() > 60 ? s.substr(0, 57) + "..." : s;
}

// An integer from a JSON number that holds one (5 or 5.0, not 5.5).
bool AsInt(const json& value, int* out) {
  if (value.is_number_integer()) {
    const auto v = value.get<int64_t>();
    if (v < INT32_MIN || v > INT32_MAX) return false;
    *out = static_cast<int>(v);
    return true;
  }
  if (value.is_number_float()) {
    const double d = value.get<double>();
    if (!std::isfinite(d) || d != std::floor(d) || std::fabs(d) > INT32_MAX) return false;
    *out = static_cast<int>(d);
    return true;
  }
  return false;
}

}  // namespace

namespace internal {

Result<std::string> ReadTextFile(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return NotFound("'" + path + "' not found");
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  if (!in.good() && !in.eof()) return DataLoss("cannot read '" + path + "'");
  return text.str();
}

Status WriteTextFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return Internal("cannot write '" + path + "'");
  return Status::Ok();
}

}  // namespace internal

Result<AvatarManifest> ReadAvatarManifest(const std::string& path) {
  LIPSYNC_ASSIGN_OR_RETURN(json doc, ParseJsonFile(path));
  const std::string where = "'" + path + "'";
  if (!doc.is_object()) return InvalidArgument(where + ": expected a JSON object");
  AvatarManifest m;
  static const std::set<std::string> kKeys = {
      "format", "version",       "name",   "fps",        "model_size",
      "model",  "audio_encoder", "frames", "crop_rects", "audio_features"};
  for (const auto& [key, value] : doc.items()) {
    if (!kKeys.count(key)) return InvalidArgument(where + ": unknown key " + Quoted(key, 60));
  }
  if (doc.contains("format") && doc["format"] != "lipsync-avatar") {
    return InvalidArgument(where + ": 'format' is " + Shorten(doc["format"]) +
                           ", expected \"lipsync-avatar\"");
  }
  if (doc.contains("version")) {
    int version = 0;
    if (!AsInt(doc["version"], &version) || version < 1 || version > kAvatarFormatVersion) {
      return InvalidArgument(where + ": 'version' " + Shorten(doc["version"]) +
                             " is not supported (this build reads version " +
                             std::to_string(kAvatarFormatVersion) + ")");
    }
  }
  auto read_string = [&](const char* key, std::string* out, bool required) -> Status {
    if (!doc.contains(key)) {
      return required ? InvalidArgument(where + ": '" + key + "' is missing") : Status::Ok();
    }
    if (!doc[key].is_string() || doc[key].get<std::string>().empty()) {
      return InvalidArgument(where + ": '" + key + "' must be a non-empty string, got " +
                             Shorten(doc[key]));
    }
    *out = doc[key].get<std::string>();
    return Status::Ok();
  };
  LIPSYNC_RETURN_IF_ERROR(read_string("name", &m.name, true));
  LIPSYNC_RETURN_IF_ERROR(read_string("model", &m.model, false));
  LIPSYNC_RETURN_IF_ERROR(read_string("audio_encoder", &m.audio_encoder, false));
  LIPSYNC_RETURN_IF_ERROR(read_string("frames", &m.frames, false));
  LIPSYNC_RETURN_IF_ERROR(read_string("crop_rects", &m.crop_rects, false));
  LIPSYNC_RETURN_IF_ERROR(read_string("audio_features", &m.audio_features, false));
  if (doc.contains("fps")) {
    const json& fps = doc["fps"];
    if (!fps.is_number() || !(fps.get<double>() > 0.0 && fps.get<double>() <= 240.0)) {
      return InvalidArgument(where + ": 'fps' must be a number in (0, 240], got " + Shorten(fps));
    }
    m.fps = fps.get<double>();
  }
  if (doc.contains("model_size")) {
    if (!AsInt(doc["model_size"], &m.model_size) || (m.model_size != 320 && m.model_size != 160)) {
      return InvalidArgument(where + ": 'model_size' must be 320 or 160, got " +
                             Shorten(doc["model_size"]));
    }
  }
  return m;
}

Status WriteAvatarManifest(const std::string& path, const AvatarManifest& m) {
  const nlohmann::ordered_json doc = {{"format", "lipsync-avatar"},
                                      {"version", kAvatarFormatVersion},
                                      {"name", m.name},
                                      {"fps", m.fps},
                                      {"model_size", m.model_size},
                                      {"model", m.model},
                                      {"audio_encoder", m.audio_encoder},
                                      {"frames", m.frames},
                                      {"crop_rects", m.crop_rects}};
  nlohmann::ordered_json out = doc;
  if (!m.audio_features.empty()) out["audio_features"] = m.audio_features;
  return internal::WriteTextFile(path, out.dump(2) + "\n");
}

Result<std::vector<CropRect>> ReadCropRects(const std::string& path) {
  LIPSYNC_ASSIGN_OR_RETURN(json doc, ParseJsonFile(path));
  if (!doc.is_array()) {
    return InvalidArgument("'" + path + "': expected a list of [x1,y1,x2,y2] rectangles");
  }
  std::vector<CropRect> rects;
  rects.reserve(doc.size());
  for (size_t i = 0; i < doc.size(); ++i) {
    const json& e = doc[i];
    CropRect r;
    if (!e.is_array() || e.size() != 4 || !AsInt(e[0], &r.x1) || !AsInt(e[1], &r.y1) ||
        !AsInt(e[2], &r.x2) || !AsInt(e[3], &r.y2)) {
      return InvalidArgument("'" + path + "' entry " + std::to_string(i) +
                             ": expected [x1,y1,x2,y2] integers, got " + Shorten(e));
    }
    rects.push_back(r);
  }
  return rects;
}

Status WriteCropRects(const std::string& path, const std::vector<CropRect>& rects) {
  // One rectangle per line: readable and diff-friendly.
  std::string text = "[\n";
  for (size_t i = 0; i < rects.size(); ++i) {
    text += "  " + CropRectToString(rects[i]) + (i + 1 < rects.size() ? ",\n" : "\n");
  }
  text += "]\n";
  return internal::WriteTextFile(path, text);
}

Result<std::vector<LandmarkPoint>> ReadLandmarks(const std::string& path) {
  LIPSYNC_ASSIGN_OR_RETURN(std::string text, internal::ReadTextFile(path));
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(line);
  }
  while (!lines.empty() && lines.back().find_first_not_of(" \t") == std::string::npos) {
    lines.pop_back();  // trailing blank lines
  }
  if (lines.size() != kLandmarkCount) {
    return InvalidArgument("landmarks '" + path + "': expected " + std::to_string(kLandmarkCount) +
                           " lines of \"x y\", got " + std::to_string(lines.size()));
  }
  std::vector<LandmarkPoint> points(kLandmarkCount);
  for (size_t i = 0; i < lines.size(); ++i) {
    const char* p = lines[i].c_str();
    double v[2];
    bool ok = true;
    for (double& value : v) {
      char* end = nullptr;
      errno = 0;
      value = std::strtod(p, &end);
      if (end == p || errno == ERANGE || !std::isfinite(value) || std::fabs(value) > 1e7) {
        ok = false;
        break;
      }
      p = end;
    }
    if (ok) ok = std::string(p).find_first_not_of(" \t") == std::string::npos;
    if (!ok) {
      return InvalidArgument("landmarks '" + path + "' line " + std::to_string(i + 1) + ": '" +
                             lines[i].substr(0, 60) + "' is not two numbers \"x y\"");
    }
    // Upstream reads floats and casts to int32, which truncates toward zero.
    points[i] = {static_cast<int>(v[0]), static_cast<int>(v[1])};
  }
  return points;
}

Result<CropRect> CropRectFromLandmarks(const std::vector<LandmarkPoint>& p, int width, int height) {
  if (p.size() != kLandmarkCount) {
    return InvalidArgument("expected " + std::to_string(kLandmarkCount) + " landmarks, got " +
                           std::to_string(p.size()));
  }
  const int xmin = p[1].x, xmax = p[31].x, ymin = p[52].y;
  const int side = xmax - xmin;
  if (side <= 0) {
    return InvalidArgument("landmark 31 (x " + std::to_string(xmax) +
                           ") is not right of landmark 1 (x " + std::to_string(xmin) +
                           "): no face square");
  }
  const CropRect square{xmin, ymin, xmax, ymin + side};
  const CropRect clipped{std::max(0, square.x1), std::max(0, square.y1), std::min(width, square.x2),
                         std::min(height, square.y2)};
  if (clipped.x2 <= clipped.x1 || clipped.y2 <= clipped.y1) {
    return InvalidArgument("face square " + CropRectToString(square) + " lies outside the " +
                           std::to_string(width) + "x" + std::to_string(height) + " frame");
  }
  return clipped;
}

}  // namespace lipsync
