#pragma once
/// Reading a guider's configuration (recipe `config:` map or guider_config.json) with diffusers' field names:
/// every field is typed, defaults are filled in and recorded, and a field nobody reads is an error.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace tessera {

/// Typed access to a guider config. Keys starting with '_' (`_class_name`, `_diffusers_version`) are ignored.
///   GuiderConfigReader r("ClassifierFreeGuidance", j);
///   double g = r.get_float("guidance_scale", 7.5);
///   r.finish();  // ValidationError: unknown field 'guidance_scael' (did you mean 'guidance_scale'?)
class GuiderConfigReader {
 public:
  GuiderConfigReader(std::string type, nlohmann::json config);

  const std::string& type() const { return type_; }
  /// Whether the config sets `key` to something other than null.
  bool has(const std::string& key) const;

  double get_float(const std::string& key, double default_value);
  /// null or absent → default_value (which may be nullopt).
  std::optional<double> get_optional_float(const std::string& key, std::optional<double> default_value);
  int64_t get_int(const std::string& key, int64_t default_value);
  bool get_bool(const std::string& key, bool default_value);
  /// An int or a list of ints (diffusers accepts both); null or absent → nullopt.
  std::optional<std::vector<int64_t>> get_int_list(const std::string& key);
  /// The raw value (for nested configs); null or absent → nullopt. Records it as read.
  std::optional<nlohmann::json> get_json(const std::string& key);

  /// Throws ValidationError naming every field that was never read (with a did-you-mean).
  void finish() const;
  /// The fields read, with defaults filled in, plus `_class_name`.
  const nlohmann::json& effective() const { return effective_; }

 private:
  const nlohmann::json* find(const std::string& key);
  [[noreturn]] void type_error(const std::string& key, const char* wanted, const nlohmann::json& got) const;
  std::string type_;
  nlohmann::json config_;
  nlohmann::json effective_;
  std::set<std::string> read_;
};

}  // namespace tessera
