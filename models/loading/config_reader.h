#pragma once
/// ModelConfig: typed reads of a model's config.json with diffusers' defaults. A field of the wrong type is a
/// ModelLoadError naming the field and the file; fields never read are logged once (spdlog warn) by finish().
/// A JSON null reads as the default (diffusers' None); the get_optional_* getters keep null as nullopt where
/// None has a meaning of its own.
///
///   ModelConfig c = ModelConfig::from_folder("tiny-sd", "vae");
///   auto channels = c.get_int_list("block_out_channels", {64});
///   int64_t groups = c.get_int("norm_num_groups", 32);
///   c.finish();
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tessera/value.h"

namespace tessera {

/// A model config (diffusers config.json or transformers config.json) with typed, defaulted getters.
class ModelConfig {
 public:
  /// `source` names the file in errors and warnings.
  ModelConfig(nlohmann::json json, std::string source);
  /// Reads `folder/subfolder/file` (ModelLoadError naming it when missing or invalid).
  static ModelConfig from_folder(const std::string& folder, const std::string& subfolder,
                                 const std::string& file = "config.json");

  /// Overwrites fields with `overrides` (a JSON object, e.g. a recipe's `config:`), keeping the source name.
  void apply_overrides(const nlohmann::json& overrides);
  /// Same, from an engine Value map (Kind::None or an empty map does nothing).
  void apply_overrides(const Value& overrides);

  /// Present and not null.
  bool has(const std::string& name) const;
  int64_t get_int(const std::string& name, int64_t def);
  std::optional<int64_t> get_optional_int(const std::string& name, std::optional<int64_t> def = std::nullopt);
  /// Accepts ints too.
  double get_float(const std::string& name, double def);
  std::optional<double> get_optional_float(const std::string& name, std::optional<double> def = std::nullopt);
  bool get_bool(const std::string& name, bool def);
  std::string get_string(const std::string& name, const std::string& def);
  std::optional<std::string> get_optional_string(const std::string& name,
                                                 std::optional<std::string> def = std::nullopt);
  std::vector<int64_t> get_int_list(const std::string& name, const std::vector<int64_t>& def);
  std::vector<double> get_float_list(const std::string& name, const std::vector<double>& def);
  std::optional<std::vector<double>> get_optional_float_list(const std::string& name);
  std::vector<std::string> get_string_list(const std::string& name, const std::vector<std::string>& def);
  /// diffusers' "int or tuple" fields (attention_head_dim, transformer_layers_per_block…): an int is repeated
  /// `count` times, a list must have exactly `count` entries (ModelLoadError otherwise). Null gives `def`
  /// repeated.
  std::vector<int64_t> get_int_or_list(const std::string& name, int64_t def, size_t count);
  /// Same with a list default (used as is, must also have `count` entries).
  std::vector<int64_t> get_int_or_list(const std::string& name, const std::vector<int64_t>& def, size_t count);
  /// A string that must be one of `allowed`.
  std::string get_choice(const std::string& name, const std::string& def, const std::vector<std::string>& allowed);

  /// Marks a field as known without reading it (accepted for compatibility, no effect here).
  void accept(const std::string& name);
  /// Warns once about every field that was never read or accepted (keys starting with '_' are metadata and
  /// never warned about). Call after all reads; later calls do nothing.
  void finish();

  const nlohmann::json& json() const { return json_; }
  const std::string& source() const { return source_; }
  /// ModelLoadError "config field 'name': message" located at the file.
  [[noreturn]] void fail(const std::string& field, const std::string& message) const;

 private:
  /// The field, or nullptr when absent or null; marks it read.
  const nlohmann::json* find(const std::string& name);
  nlohmann::json json_;
  std::string source_;
  std::set<std::string> read_;
  bool finished_ = false;
};

}  // namespace tessera
