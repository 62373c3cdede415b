#include "models/loading/diffusers_folder.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>

#include "tessera/error.h"

namespace fs = std::filesystem;

namespace tessera {

namespace {

// Replaces Python's bare NaN / Infinity / -Infinity tokens (outside strings) with quoted strings.
std::string quote_python_literals(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char ch = text[i];
    if (in_string) {
      out += ch;
      if (ch == '\\' && i + 1 < text.size()) out += text[++i];
      else if (ch == '"') in_string = false;
      continue;
    }
    if (ch == '"') {
      in_string = true;
      out += ch;
      continue;
    }
    bool replaced = false;
    for (const char* literal : {"-Infinity", "Infinity", "NaN"}) {
      size_t n = std::char_traits<char>::length(literal);
      if (text.compare(i, n, literal) == 0) {
        out += '"';
        out += literal;
        out += '"';
        i += n - 1;
        replaced = true;
        break;
      }
    }
    if (!replaced) out += ch;
  }
  return out;
}

std::string quoted_list(const std::vector<std::string>& names) {
  std::string s;
  for (size_t i = 0; i < names.size(); ++i) s += (i ? ", '" : "'") + names[i] + "'";
  return s;
}

std::vector<std::string> files_with_suffix(const std::string& dir, const std::string& suffix) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::string name = e.path().filename().string();
    if (name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
      out.push_back(name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> shards_from_index(const std::string& dir, const std::string& index_path) {
  nlohmann::json index = read_json_file(index_path);
  auto map_it = index.find("weight_map");
  if (!index.is_object() || map_it == index.end() || !map_it->is_object() || map_it->empty())
    throw ModelLoadError("shard index has no non-empty \"weight_map\" object", SourceLoc{index_path});
  std::vector<std::string> shards;
  std::set<std::string> seen;
  for (const auto& [tensor, file] : map_it->items()) {
    if (!file.is_string())
      throw ModelLoadError("weight_map entry for tensor '" + tensor + "' is not a file name", SourceLoc{index_path});
    std::string name = file.get<std::string>();
    if (name.empty() || name.find('/') != std::string::npos || name.find('\\') != std::string::npos ||
        name == "." || name == "..")
      throw ModelLoadError("weight_map names shard '" + name + "' for tensor '" + tensor +
                               "', which is not a plain file name in the folder",
                           SourceLoc{index_path});
    if (seen.insert(name).second) shards.push_back(name);
  }
  std::vector<std::string> paths;
  for (const auto& name : shards) {
    fs::path p = fs::path(dir) / name;
    if (!fs::is_regular_file(p))
      throw ModelLoadError("shard '" + name + "' named by the index is missing from " + dir, SourceLoc{index_path});
    paths.push_back(p.string());
  }
  return paths;
}

}  // namespace

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ModelLoadError("cannot open JSON file (missing or unreadable)", SourceLoc{path});
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return nlohmann::json::parse(quote_python_literals(ss.str()));
  } catch (const nlohmann::json::parse_error& e) {
    throw ModelLoadError(std::string("invalid JSON: ") + e.what(), SourceLoc{path});
  }
}

nlohmann::json read_model_index(const std::string& folder) {
  std::string path = (fs::path(folder) / "model_index.json").string();
  nlohmann::json j = read_json_file(path);
  if (!j.is_object()) throw ModelLoadError("model_index.json is not a JSON object", SourceLoc{path});
  return j;
}

std::string component_dir(const std::string& folder, const std::string& subfolder) {
  return subfolder.empty() ? folder : (fs::path(folder) / subfolder).string();
}

nlohmann::json read_component_config(const std::string& folder, const std::string& subfolder,
                                     const std::string& file) {
  std::string dir = component_dir(folder, subfolder);
  if (!fs::is_directory(dir))
    throw ModelLoadError("component folder '" + dir + "' does not exist", SourceLoc{},
                         {}, "check `from:` and `subfolder:`");
  std::string path = (fs::path(dir) / file).string();
  nlohmann::json j = read_json_file(path);
  if (!j.is_object()) throw ModelLoadError(file + " is not a JSON object", SourceLoc{path});
  return j;
}

std::vector<std::string> resolve_weight_files(const std::string& dir, const std::string& base,
                                              const std::string& variant) {
  if (!fs::is_directory(dir)) throw ModelLoadError("weights folder '" + dir + "' does not exist");
  std::vector<std::string> looked_for;
  auto try_single = [&](const std::string& name) -> std::optional<std::string> {
    looked_for.push_back(name);
    fs::path p = fs::path(dir) / name;
    if (fs::is_regular_file(p)) return p.string();
    return std::nullopt;
  };
  std::vector<std::string> single_names, index_names;
  if (variant.empty()) {
    single_names = {base + ".safetensors"};
    index_names = {base + ".safetensors.index.json"};
  } else {
    single_names = {base + "." + variant + ".safetensors"};
    index_names = {base + ".safetensors.index." + variant + ".json", base + "." + variant + ".safetensors.index.json"};
  }
  for (const auto& name : single_names)
    if (auto p = try_single(name)) return {*p};
  for (const auto& name : index_names)
    if (auto p = try_single(name)) return shards_from_index(dir, *p);

  std::string msg = "no " + std::string(variant.empty() ? "" : "'" + variant + "' variant ") +
                    "safetensors weights in '" + dir + "' (looked for " + quoted_list(looked_for) + ")";
  std::string hint;
  auto present = files_with_suffix(dir, ".safetensors");
  auto bins = files_with_suffix(dir, ".bin");
  if (!present.empty()) hint = "the folder has " + quoted_list(present) + (variant.empty() ? "; set `variant:`?" : "; check `variant:`");
  else if (!bins.empty())
    hint = "the folder has only PyTorch pickles (" + quoted_list(bins) +
           "), which Tessera does not load; convert them to safetensors";
  throw ModelLoadError(msg, SourceLoc{}, {}, hint);
}

}  // namespace tessera
