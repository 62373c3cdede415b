#include "schedulers/scheduler.h"

#include <spdlog/spdlog.h>

#include <set>

#include <cmath>
#include <limits>

namespace tessera {

namespace {

std::string json_type(const nlohmann::json& v) {
  if (v.is_boolean()) return "a boolean";
  if (v.is_number_integer()) return "an integer";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string (" + v.dump() + ")";
  if (v.is_null()) return "null";
  if (v.is_array()) return "a list";
  return "an object";
}

// Python's json writes these for non-finite floats.
std::optional<double> nonfinite_from_string(const std::string& s) {
  if (s == "Infinity") return std::numeric_limits<double>::infinity();
  if (s == "-Infinity") return -std::numeric_limits<double>::infinity();
  if (s == "NaN") return std::numeric_limits<double>::quiet_NaN();
  return std::nullopt;
}

}  // namespace

SchedulerConfig::SchedulerConfig(nlohmann::json config, std::string class_name, std::string source)
    : json_(std::move(config)), class_name_(std::move(class_name)), source_(std::move(source)) {
  if (json_.is_null()) json_ = nlohmann::json::object();
  if (!json_.is_object())
    throw ValidationError(class_name_ + " config must be a JSON object, got " + json_type(json_), SourceLoc{source_});
}

void SchedulerConfig::fail(const std::string& field, const std::string& message) const {
  throw ValidationError(class_name_ + " config field '" + field + "': " + message, SourceLoc{source_});
}

const nlohmann::json* SchedulerConfig::find(const std::string& name) {
  read_.insert(name);
  auto it = json_.find(name);
  if (it == json_.end()) return nullptr;
  return &*it;
}

int64_t SchedulerConfig::get_int(const std::string& name, int64_t def) {
  const auto* v = find(name);
  if (!v || v->is_null()) return def;
  if (v->is_number_integer()) return v->get<int64_t>();
  if (v->is_number_float()) {
    double d = v->get<double>();
    if (std::isfinite(d) && d == std::floor(d)) return static_cast<int64_t>(d);
  }
  fail(name, "expected an integer, got " + json_type(*v));
}

double SchedulerConfig::get_float(const std::string& name, double def) {
  auto v = get_optional_float(name, def);
  return v ? *v : def;
}

std::optional<double> SchedulerConfig::get_optional_float(const std::string& name, std::optional<double> def) {
  const auto* v = find(name);
  if (!v) return def;
  if (v->is_null()) return std::nullopt;
  if (v->is_number()) return v->get<double>();
  if (v->is_string())
    if (auto d = nonfinite_from_string(v->get<std::string>())) return d;
  fail(name, "expected a number, got " + json_type(*v));
}

bool SchedulerConfig::get_bool(const std::string& name, bool def) {
  const auto* v = find(name);
  if (!v || v->is_null()) return def;
  if (v->is_boolean()) return v->get<bool>();
  fail(name, "expected true or false, got " + json_type(*v));
}

std::string SchedulerConfig::get_string(const std::string& name, const std::string& def) {
  const auto* v = find(name);
  if (!v || v->is_null()) return def;
  if (v->is_string()) return v->get<std::string>();
  fail(name, "expected a string, got " + json_type(*v));
}

std::string SchedulerConfig::get_choice(const std::string& name, const std::string& def,
                                        const std::vector<std::string>& allowed) {
  std::string s = get_string(name, def);
  for (const auto& a : allowed)
    if (a == s) return s;
  std::string list;
  for (const auto& a : allowed) list += (list.empty() ? "'" : ", '") + a + "'";
  std::string hint = did_you_mean(s, allowed);
  throw ValidationError(class_name_ + " config field '" + name + "': '" + s + "' is not supported (one of " + list +
                            ")",
                        SourceLoc{source_}, {}, hint);
}

std::optional<std::vector<double>> SchedulerConfig::get_optional_float_list(const std::string& name) {
  const auto* v = find(name);
  if (!v || v->is_null()) return std::nullopt;
  if (!v->is_array()) fail(name, "expected a list of numbers, got " + json_type(*v));
  std::vector<double> out;
  for (const auto& e : *v) {
    if (!e.is_number()) fail(name, "expected a list of numbers, found " + json_type(e));
    out.push_back(e.get<double>());
  }
  return out;
}

void SchedulerConfig::accept(const std::string& name) { read_.insert(name); }

namespace {

/// Config fields of diffusers' scheduler classes. A model folder's scheduler_config.json is written for one class
/// and read by another when a recipe swaps the scheduler (PNDM's `skip_prk_steps` under DDIM): such a field is
/// not something the user can act on, so it is logged at debug level; a field no scheduler has (a typo) warns.
const std::set<std::string>& diffusers_scheduler_fields() {
  static const std::set<std::string> fields{
      "algorithm_type", "base_image_seq_len", "base_shift", "beta_end", "beta_schedule", "beta_start",
      "clip_sample", "clip_sample_range", "disable_corrector", "dynamic_thresholding_ratio", "euler_at_final",
      "final_sigmas_type", "flow_shift", "interpolation_type", "invert_sigmas", "lambda_min_clipped",
      "lower_order_final", "max_image_seq_len", "max_shift", "num_train_timesteps", "original_inference_steps",
      "predict_x0", "prediction_type", "rescale_betas_zero_snr", "sample_max_value", "set_alpha_to_one", "shift",
      "shift_terminal", "sigma_max", "sigma_min", "skip_prk_steps", "solver_order", "solver_p", "solver_type",
      "steps_offset", "stochastic_sampling", "thresholding", "time_shift_type", "timestep_scaling",
      "timestep_spacing", "timestep_type", "trained_betas", "use_beta_sigmas", "use_dynamic_shifting",
      "use_exponential_sigmas", "use_flow_sigmas", "use_karras_sigmas", "use_lu_lambdas", "variance_type"};
  return fields;
}

}  // namespace

void SchedulerConfig::finish() {
  std::vector<std::string> known(read_.begin(), read_.end());
  for (auto it = json_.begin(); it != json_.end(); ++it) {
    const std::string& key = it.key();
    if (read_.count(key) || (!key.empty() && key[0] == '_')) continue;  // _class_name, _diffusers_version
    if (diffusers_scheduler_fields().count(key)) {
      spdlog::debug("{}{}: config field '{}' belongs to another scheduler class; {} does not use it",
                    source_.empty() ? "" : source_, source_.empty() ? class_name_ : "", key, class_name_);
      continue;
    }
    std::string hint = did_you_mean(key, known);
    spdlog::warn("{}{}: config field '{}' is not used by {} and is ignored{}", source_.empty() ? "" : source_,
                 source_.empty() ? class_name_ : "", key, class_name_, hint.empty() ? "" : " (" + hint + ")");
  }
}

nlohmann::json parse_json_lenient(const std::string& text, const std::string& source) {
  // Quote bare NaN / Infinity / -Infinity outside strings so that a standard parser accepts them.
  std::string out;
  out.reserve(text.size() + 16);
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (in_string) {
      out += c;
      if (c == '\\' && i + 1 < text.size()) out += text[++i];
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
      out += c;
      continue;
    }
    bool replaced = false;
    for (const char* word : {"-Infinity", "Infinity", "NaN"}) {
      size_t n = std::char_traits<char>::length(word);
      if (text.compare(i, n, word) == 0) {
        out += '"';
        out += word;
        out += '"';
        i += n - 1;
        replaced = true;
        break;
      }
    }
    if (!replaced) out += c;
  }
  try {
    return nlohmann::json::parse(out);
  } catch (const nlohmann::json::parse_error& e) {
    throw ValidationError(std::string("malformed JSON: ") + e.what(), SourceLoc{source});
  }
}

// ---- Scheduler ----

double Scheduler::timestep_at(int64_t i) const {
  require_timesteps_set("timestep_at");
  return timesteps_[i].item<double>();
}

at::Tensor Scheduler::scale_noise(const at::Tensor&, const at::Tensor&, const at::Tensor&) {
  throw ValidationError(type() + " has no scale_noise (it is flow matching's forward process); use add_noise");
}

void Scheduler::set_step_option(const std::string& name, double) {
  throw ValidationError(type() + ".step takes no argument '" + name + "'");
}

void Scheduler::check_num_inference_steps(int64_t n) const {
  if (n <= 0)
    throw ValidationError(type() + ": num_inference_steps must be at least 1, got " + std::to_string(n));
  if (n > num_train_timesteps_)
    throw ValidationError(type() + ": num_inference_steps (" + std::to_string(n) +
                          ") cannot be larger than num_train_timesteps (" + std::to_string(num_train_timesteps_) +
                          "), the number of timesteps the model was trained with");
}

void Scheduler::require_timesteps_set(const char* what) const {
  if (!timesteps_.defined() || num_inference_steps_ == 0)
    throw ExecutionError(type() + "." + what + " called before set_timesteps");
}

int64_t Scheduler::index_for_timestep(double timestep) const {
  require_timesteps_set("step");
  at::Tensor indices = (timesteps_ == timestep).nonzero();
  if (indices.size(0) == 0)
    throw ValidationError(type() + ": timestep " + std::to_string(timestep) + " is not in the current schedule");
  return indices[indices.size(0) > 1 ? 1 : 0].item<int64_t>();
}

void Scheduler::init_step_index(double timestep) {
  if (step_index_) return;
  step_index_ = begin_index_ ? *begin_index_ : index_for_timestep(timestep);
}

}  // namespace tessera
