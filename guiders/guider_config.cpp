#include "guiders/guider_config.h"

#include "tessera/error.h"

namespace tessera {

GuiderConfigReader::GuiderConfigReader(std::string type, nlohmann::json config)
    : type_(std::move(type)), config_(std::move(config)), effective_(nlohmann::json::object()) {
  if (config_.is_null()) config_ = nlohmann::json::object();
  if (!config_.is_object())
    throw ValidationError("the config of guider " + type_ + " must be a map of fields, got " + config_.dump());
  effective_["_class_name"] = type_;
}

const nlohmann::json* GuiderConfigReader::find(const std::string& key) {
  read_.insert(key);
  auto it = config_.find(key);
  if (it == config_.end() || it->is_null()) return nullptr;
  return &*it;
}

bool GuiderConfigReader::has(const std::string& key) const {
  auto it = config_.find(key);
  return it != config_.end() && !it->is_null();
}

void GuiderConfigReader::type_error(const std::string& key, const char* wanted, const nlohmann::json& got) const {
  throw ValidationError("field '" + key + "' of guider " + type_ + " must be " + wanted + ", got " + got.dump());
}

double GuiderConfigReader::get_float(const std::string& key, double default_value) {
  const nlohmann::json* v = find(key);
  double out = default_value;
  if (v) {
    if (!v->is_number()) type_error(key, "a number", *v);
    out = v->get<double>();
  }
  effective_[key] = out;
  return out;
}

std::optional<double> GuiderConfigReader::get_optional_float(const std::string& key,
                                                             std::optional<double> default_value) {
  const nlohmann::json* v = find(key);
  std::optional<double> out = default_value;
  if (v) {
    if (!v->is_number()) type_error(key, "a number or null", *v);
    out = v->get<double>();
  } else if (config_.contains(key)) {
    out = std::nullopt;  // an explicit null switches the feature off (APG momentum: null)
  }
  effective_[key] = out ? nlohmann::json(*out) : nlohmann::json(nullptr);
  return out;
}

int64_t GuiderConfigReader::get_int(const std::string& key, int64_t default_value) {
  const nlohmann::json* v = find(key);
  int64_t out = default_value;
  if (v) {
    if (!v->is_number_integer()) type_error(key, "an integer", *v);
    out = v->get<int64_t>();
  }
  effective_[key] = out;
  return out;
}

bool GuiderConfigReader::get_bool(const std::string& key, bool default_value) {
  const nlohmann::json* v = find(key);
  bool out = default_value;
  if (v) {
    if (!v->is_boolean()) type_error(key, "true or false", *v);
    out = v->get<bool>();
  }
  effective_[key] = out;
  return out;
}

std::optional<std::vector<int64_t>> GuiderConfigReader::get_int_list(const std::string& key) {
  const nlohmann::json* v = find(key);
  if (!v) {
    effective_[key] = nullptr;
    return std::nullopt;
  }
  std::vector<int64_t> out;
  if (v->is_number_integer()) {
    out.push_back(v->get<int64_t>());
  } else if (v->is_array()) {
    for (const auto& e : *v) {
      if (!e.is_number_integer()) type_error(key, "an integer or a list of integers", *v);
      out.push_back(e.get<int64_t>());
    }
  } else {
    type_error(key, "an integer or a list of integers", *v);
  }
  effective_[key] = out;
  return out;
}

std::optional<nlohmann::json> GuiderConfigReader::get_json(const std::string& key) {
  const nlohmann::json* v = find(key);
  effective_[key] = v ? *v : nlohmann::json(nullptr);
  if (!v) return std::nullopt;
  return *v;
}

void GuiderConfigReader::finish() const {
  std::vector<std::string> known(read_.begin(), read_.end());
  std::vector<ValidationError> errors;
  for (auto it = config_.begin(); it != config_.end(); ++it) {
    if (!it.key().empty() && it.key()[0] == '_') continue;
    if (read_.count(it.key())) continue;
    errors.emplace_back("unknown field '" + it.key() + "' for guider " + type_, SourceLoc{}, std::string{},
                        did_you_mean(it.key(), known));
  }
  if (errors.size() == 1) throw errors.front();
  if (!errors.empty()) throw ValidationErrors(std::move(errors));
}

}  // namespace tessera
