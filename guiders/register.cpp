#include "guiders/register.h"

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

#include "tessera/error.h"
#include "guiders/adaptive_projected_guidance.h"
#include "guiders/adaptive_projected_mix_guidance.h"
#include "guiders/auto_guidance.h"
#include "guiders/classifier_free_guidance.h"
#include "guiders/classifier_free_zero_star_guidance.h"
#include "guiders/guider_config.h"
#include "guiders/magnitude_aware_guidance.h"
#include "guiders/perturbed_attention_guidance.h"
#include "guiders/skip_layer_guidance.h"
#include "guiders/smoothed_energy_guidance.h"
#include "guiders/tangential_classifier_free_guidance.h"

namespace tessera {

namespace {

struct GuiderType {
  std::string description;
  std::function<GuiderPtr(GuiderConfigReader&)> create;
};

template <typename T>
GuiderType entry(std::string description) {
  return {std::move(description), [](GuiderConfigReader& r) -> GuiderPtr { return std::make_shared<T>(r); }};
}

const std::map<std::string, GuiderType>& guider_types() {
  static const std::map<std::string, GuiderType> types{
      {"ClassifierFreeGuidance", entry<ClassifierFreeGuidance>("classifier-free guidance (CFG)")},
      {"ClassifierFreeZeroStarGuidance",
       entry<ClassifierFreeZeroStarGuidance>("CFG-Zero*: optimised unconditional scale, zero init steps")},
      {"AdaptiveProjectedGuidance",
       entry<AdaptiveProjectedGuidance>("APG: momentum, norm threshold, parallel component scaled by eta")},
      {"TangentialClassifierFreeGuidance",
       entry<TangentialClassifierFreeGuidance>("TCFG: unconditional prediction projected on the dominant direction")},
      {"PerturbedAttentionGuidance",
       entry<PerturbedAttentionGuidance>("PAG: extra pass with identity self-attention in chosen layers")},
      {"SkipLayerGuidance", entry<SkipLayerGuidance>("SLG: extra pass with chosen transformer blocks skipped")},
      {"SmoothedEnergyGuidance",
       entry<SmoothedEnergyGuidance>("SEG: extra pass with Gaussian-blurred self-attention queries")},
      {"AdaptiveProjectedMixGuidance",
       entry<AdaptiveProjectedMixGuidance>("APG-Mix: CFG for the first steps, then APG")},
      {"MagnitudeAwareGuidance",
       entry<MagnitudeAwareGuidance>("MAMBO-G: CFG scale shrinking with the relative update magnitude")},
      {"AutoGuidance", entry<AutoGuidance>("AutoGuidance: unconditional pass through a degraded model")},
  };
  return types;
}

nlohmann::json value_to_json(const Value& v, const std::string& what) {
  switch (v.kind()) {
    case Kind::None: return nullptr;
    case Kind::Int: return v.to_int(what);
    case Kind::Float: return v.to_float(what);
    case Kind::Bool: return v.to_bool(what);
    case Kind::String: return v.str(what);
    case Kind::IntList: return v.int_list(what);
    case Kind::FloatList: return v.float_list(what);
    case Kind::StringList: return v.string_list(what);
    case Kind::Map: {
      nlohmann::json out = nlohmann::json::object();
      for (const auto& [k, e] : v.map(what)) out[k] = value_to_json(e, what + "." + k);
      return out;
    }
    default:
      throw ValidationError(what + " has kind " + kind_name(v.kind()) + ", which a guider config cannot hold");
  }
}

}  // namespace

std::vector<std::string> builtin_guider_types() {
  std::vector<std::string> out;
  for (const auto& [name, t] : guider_types()) out.push_back(name);
  return out;
}

GuiderPtr make_guider(const std::string& type, const nlohmann::json& config) {
  auto it = guider_types().find(type);
  if (it == guider_types().end())
    throw ValidationError("unknown guider '" + type + "'", {}, {}, did_you_mean(type, builtin_guider_types()));
  if (config.is_object() && config.contains("_class_name") && config["_class_name"] != type)
    throw ValidationError("guider config is for " + config["_class_name"].dump() + ", not " + type);
  GuiderConfigReader reader(type, config);
  GuiderPtr guider = it->second.create(reader);
  reader.finish();
  guider->set_config_record(reader.effective());
  return guider;
}

GuiderPtr make_guider(const ComponentSpec& spec) {
  nlohmann::json config = nlohmann::json::object();
  if (!spec.from.empty()) {
    std::filesystem::path path(spec.from);
    if (!spec.subfolder.empty()) path /= spec.subfolder;
    if (std::filesystem::is_directory(path)) path /= "guider_config.json";
    std::ifstream in(path);
    if (!in) throw ModelLoadError("cannot read guider config '" + path.string() + "' for component '" + spec.name + "'");
    try {
      config = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      throw ModelLoadError("guider config '" + path.string() + "' is not valid JSON: " + e.what());
    }
    if (!config.is_object()) throw ModelLoadError("guider config '" + path.string() + "' is not a JSON object");
  }
  if (!spec.config.is_none()) {
    nlohmann::json overrides = value_to_json(spec.config, "config of component '" + spec.name + "'");
    if (!overrides.is_object())
      throw ValidationError("config of guider component '" + spec.name + "' must be a map");
    for (auto it = overrides.begin(); it != overrides.end(); ++it) config[it.key()] = it.value();
  }
  try {
    return make_guider(spec.type, config);
  } catch (const ValidationError& e) {
    throw ValidationError("component '" + spec.name + "': " + e.message(), e.where(), e.block_path(), e.hint());
  }
}

void register_builtin_guiders(Registry& registry) {
  for (const auto& [name, t] : guider_types()) {
    registry.add_component_type({name, ComponentCategory::Guider, t.description,
                                 [](const ComponentSpec& spec) -> ComponentPtr { return make_guider(spec); }, {}});
  }
}

}  // namespace tessera
