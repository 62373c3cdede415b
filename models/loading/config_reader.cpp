#include "models/loading/config_reader.h"

#include <spdlog/spdlog.h>

#include <cmath>

#include "tessera/error.h"
#include "tessera/value.h"
#include "models/loading/diffusers_folder.h"

namespace tessera {

namespace {

const char* json_type(const nlohmann::json& j) {
  if (j.is_boolean()) return "a bool";
  if (j.is_number_integer()) return "an int";
  if (j.is_number()) return "a float";
  if (j.is_string()) return "a string";
  if (j.is_array()) return "a list";
  if (j.is_object()) return "an object";
  return "null";
}

bool is_int(const nlohmann::json& j) { return j.is_number_integer() && !j.is_boolean(); }

bool is_float(const nlohmann::json& j) {
  if (j.is_number() && !j.is_boolean()) return true;
  // Python's json.dump writes non-finite floats as bare literals; read_json_file quotes them.
  return j.is_string() && (j == "NaN" || j == "Infinity" || j == "-Infinity");
}

double to_double(const nlohmann::json& j) {
  if (j.is_string()) {
    if (j == "NaN") return std::nan("");
    return j == "Infinity" ? INFINITY : -INFINITY;
  }
  return j.get<double>();
}

nlohmann::json value_to_json(const Value& v) {
  switch (v.kind()) {
    case Kind::None: return nullptr;
    case Kind::Int: return v.to_int();
    case Kind::Float: return v.to_float();
    case Kind::Bool: return v.to_bool();
    case Kind::String: return v.str();
    case Kind::IntList: return v.int_list();
    case Kind::FloatList: return v.float_list();
    case Kind::StringList: return v.string_list();
    case Kind::Map: {
      nlohmann::json out = nlohmann::json::object();
      for (const auto& kv : v.map()) out[kv.first] = value_to_json(kv.second);
      return out;
    }
    default: throw ModelLoadError(std::string("a model config override cannot hold a ") + kind_name(v.kind()));
  }
}

}  // namespace

ModelConfig::ModelConfig(nlohmann::json json, std::string source) : json_(std::move(json)), source_(std::move(source)) {
  if (!json_.is_object()) throw ModelLoadError("model config is not a JSON object", SourceLoc{source_});
}

ModelConfig ModelConfig::from_folder(const std::string& folder, const std::string& subfolder,
                                     const std::string& file) {
  return ModelConfig(read_component_config(folder, subfolder, file), component_dir(folder, subfolder) + "/" + file);
}

void ModelConfig::apply_overrides(const nlohmann::json& overrides) {
  if (overrides.is_null()) return;
  if (!overrides.is_object()) throw ModelLoadError("model config overrides must be a map", SourceLoc{source_});
  for (const auto& [k, v] : overrides.items()) json_[k] = v;
}

void ModelConfig::apply_overrides(const Value& overrides) {
  if (overrides.is_none()) return;
  apply_overrides(value_to_json(overrides));
}

bool ModelConfig::has(const std::string& name) const {
  auto it = json_.find(name);
  return it != json_.end() && !it->is_null();
}

const nlohmann::json* ModelConfig::find(const std::string& name) {
  read_.insert(name);
  auto it = json_.find(name);
  if (it == json_.end() || it->is_null()) return nullptr;
  return &*it;
}

void ModelConfig::fail(const std::string& field, const std::string& message) const {
  throw ModelLoadError("config field '" + field + "': " + message, SourceLoc{source_});
}

int64_t ModelConfig::get_int(const std::string& name, int64_t def) {
  return get_optional_int(name, def).value_or(def);
}

std::optional<int64_t> ModelConfig::get_optional_int(const std::string& name, std::optional<int64_t> def) {
  const auto* j = find(name);
  if (!j) return def;
  if (!is_int(*j)) fail(name, std::string("expected an int, got ") + json_type(*j));
  return j->get<int64_t>();
}

double ModelConfig::get_float(const std::string& name, double def) {
  return get_optional_float(name, def).value_or(def);
}

std::optional<double> ModelConfig::get_optional_float(const std::string& name, std::optional<double> def) {
  const auto* j = find(name);
  if (!j) return def;
  if (!is_float(*j)) fail(name, std::string("expected a float, got ") + json_type(*j));
  return to_double(*j);
}

bool ModelConfig::get_bool(const std::string& name, bool def) {
  const auto* j = find(name);
  if (!j) return def;
  if (!j->is_boolean()) fail(name, std::string("expected a bool, got ") + json_type(*j));
  return j->get<bool>();
}

std::string ModelConfig::get_string(const std::string& name, const std::string& def) {
  return get_optional_string(name, def).value_or(def);
}

std::optional<std::string> ModelConfig::get_optional_string(const std::string& name,
                                                            std::optional<std::string> def) {
  const auto* j = find(name);
  if (!j) return def;
  if (!j->is_string()) fail(name, std::string("expected a string, got ") + json_type(*j));
  return j->get<std::string>();
}

std::vector<int64_t> ModelConfig::get_int_list(const std::string& name, const std::vector<int64_t>& def) {
  const auto* j = find(name);
  if (!j) return def;
  if (!j->is_array()) fail(name, std::string("expected a list of ints, got ") + json_type(*j));
  std::vector<int64_t> out;
  for (size_t i = 0; i < j->size(); ++i) {
    if (!is_int((*j)[i]))
      fail(name, "expected a list of ints, entry " + std::to_string(i) + " is " + json_type((*j)[i]));
    out.push_back((*j)[i].get<int64_t>());
  }
  return out;
}

std::vector<double> ModelConfig::get_float_list(const std::string& name, const std::vector<double>& def) {
  return get_optional_float_list(name).value_or(def);
}

std::optional<std::vector<double>> ModelConfig::get_optional_float_list(const std::string& name) {
  const auto* j = find(name);
  if (!j) return std::nullopt;
  if (!j->is_array()) fail(name, std::string("expected a list of floats, got ") + json_type(*j));
  std::vector<double> out;
  for (size_t i = 0; i < j->size(); ++i) {
    if (!is_float((*j)[i]))
      fail(name, "expected a list of floats, entry " + std::to_string(i) + " is " + json_type((*j)[i]));
    out.push_back(to_double((*j)[i]));
  }
  return out;
}

std::vector<std::string> ModelConfig::get_string_list(const std::string& name, const std::vector<std::string>& def) {
  const auto* j = find(name);
  if (!j) return def;
  if (!j->is_array()) fail(name, std::string("expected a list of strings, got ") + json_type(*j));
  std::vector<std::string> out;
  for (size_t i = 0; i < j->size(); ++i) {
    if (!(*j)[i].is_string())
      fail(name, "expected a list of strings, entry " + std::to_string(i) + " is " + json_type((*j)[i]));
    out.push_back((*j)[i].get<std::string>());
  }
  return out;
}

std::vector<int64_t> ModelConfig::get_int_or_list(const std::string& name, int64_t def, size_t count) {
  return get_int_or_list(name, std::vector<int64_t>(count, def), count);
}

std::vector<int64_t> ModelConfig::get_int_or_list(const std::string& name, const std::vector<int64_t>& def,
                                                  size_t count) {
  const auto* j = find(name);
  std::vector<int64_t> out;
  if (!j) {
    out = def;
  } else if (is_int(*j)) {
    out.assign(count, j->get<int64_t>());
  } else if (j->is_array()) {
    out = get_int_list(name, {});
  } else {
    fail(name, std::string("expected an int or a list of ints, got ") + json_type(*j));
  }
  if (out.size() != count)
    fail(name, "expected " + std::to_string(count) + " entries (one per block), got " + std::to_string(out.size()));
  return out;
}

std::string ModelConfig::get_choice(const std::string& name, const std::string& def,
                                    const std::vector<std::string>& allowed) {
  std::string v = get_string(name, def);
  for (const auto& a : allowed)
    if (a == v) return v;
  std::string list;
  for (const auto& a : allowed) list += (list.empty() ? "'" : ", '") + a + "'";
  fail(name, "'" + v + "' is not supported here (supported: " + list + ")");
}

void ModelConfig::accept(const std::string& name) { read_.insert(name); }

void ModelConfig::finish() {
  if (finished_) return;
  finished_ = true;
  std::string unknown;
  for (const auto& [k, v] : json_.items()) {
    if (k.empty() || k[0] == '_' || read_.count(k)) continue;
    unknown += (unknown.empty() ? "'" : ", '") + k + "'";
  }
  if (!unknown.empty()) spdlog::warn("{}: config fields not used by Tessera (ignored): {}", source_, unknown);
}

}  // namespace tessera
