#pragma once
/// The component factory every diffusers model class shares: from_config builds the module from the
/// spec's config overrides (random weights, for tests); from_pretrained reads `config.json` from
/// from/subfolder, applies the overrides and loads the weights strictly.
#include <memory>

#include "engine/components.h"
#include "models/loading/config_reader.h"
#include "models/loading/diffusers_folder.h"
#include "models/loading/state_dict.h"

namespace tessera {

/// `Impl` is a torch::nn::Module + Component constructible from `Config`; `Config::from_config(ModelConfig&)`.
template <typename Impl, typename Config>
ComponentPtr create_diffusers_model(const ComponentSpec& spec, const std::string& weights_name = kDiffusersWeightsName) {
  if (spec.creation == Creation::FromConfig) {
    ModelConfig cfg(nlohmann::json::object(), "component '" + spec.name + "' config");
    cfg.apply_overrides(spec.config);
    auto model = std::make_shared<Impl>(Config::from_config(cfg));
    model->eval();
    return model;
  }
  ModelConfig cfg = ModelConfig::from_folder(spec.from, spec.subfolder);
  cfg.apply_overrides(spec.config);
  auto model = std::make_shared<Impl>(Config::from_config(cfg));
  load_state_dict(*model, resolve_weight_files(component_dir(spec.from, spec.subfolder), weights_name, spec.variant));
  model->eval();
  return model;
}

}  // namespace tessera
