#include "models/loading/model_defaults.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>

#include "tessera/error.h"

// Both are set by models/CMakeLists.txt; the fallbacks keep the file compilable on its own.
#ifndef TESSERA_DEFAULTS_SOURCE_DIR
#define TESSERA_DEFAULTS_SOURCE_DIR ""
#endif
#ifndef TESSERA_DEFAULTS_INSTALL_DIR
#define TESSERA_DEFAULTS_INSTALL_DIR ""
#endif

namespace tessera {

namespace {

namespace fs = std::filesystem;

bool is_dir(const std::string& path) {
  std::error_code ec;
  return !path.empty() && fs::is_directory(path, ec);
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

}  // namespace

std::string shipped_defaults_dir() {
  // An explicit TESSERA_DEFAULTS_DIR is used alone: a wrong one is an error, not a silent fall-through.
  if (const char* env = std::getenv("TESSERA_DEFAULTS_DIR"); env && *env) {
    if (is_dir(env)) return env;
    throw ModelLoadError(std::string("shipped model defaults: TESSERA_DEFAULTS_DIR='") + env + "' is not a folder", {},
                         {}, "point TESSERA_DEFAULTS_DIR at models/defaults of a checkout or share/tessera/defaults");
  }
  std::vector<std::string> looked;
  for (const std::string& dir : {std::string(TESSERA_DEFAULTS_SOURCE_DIR), std::string(TESSERA_DEFAULTS_INSTALL_DIR)}) {
    if (dir.empty()) continue;
    if (is_dir(dir)) return dir;
    looked.push_back("'" + dir + "'");
  }
  throw ModelLoadError("shipped model defaults not found (looked in $TESSERA_DEFAULTS_DIR (unset)" +
                           (looked.empty() ? std::string() : ", " + join(looked)) + ")",
                       {}, {}, "set TESSERA_DEFAULTS_DIR to models/defaults of a checkout or share/tessera/defaults");
}

std::vector<std::string> shipped_families() {
  return {"sd1", "sd1-inpaint", "sd2", "sd2-v", "sd2-inpaint", "sdxl-base", "sdxl-refiner", "sdxl-inpaint"};
}

std::string shipped_family_dir(const std::string& family) {
  const std::vector<std::string> families = shipped_families();
  if (std::find(families.begin(), families.end(), family) == families.end()) {
    const std::string guess = did_you_mean(family, families);
    throw ModelLoadError("no shipped model defaults for family '" + family + "'" +
                         (guess.empty() ? std::string() : " (" + guess + ")") + "; known families: " + join(families));
  }
  const std::string dir = (fs::path(shipped_defaults_dir()) / family).string();
  if (!is_dir(dir)) throw ModelLoadError("shipped model defaults: the folder of family '" + family + "' is missing", SourceLoc{dir});
  return dir;
}

std::string shipped_clip_vocab_dir() {
  const std::string dir = (fs::path(shipped_defaults_dir()) / "clip").string();
  if (!is_dir(dir)) throw ModelLoadError("shipped model defaults: the CLIP vocabulary folder is missing", SourceLoc{dir});
  return dir;
}

}  // namespace tessera
