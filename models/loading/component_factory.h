#pragma once
/// The component factory every diffusers model class shares: from_config builds the module from the
/// spec's config overrides (random weights, for tests); from_pretrained reads `config.json` from
/// from/subfolder (or a single file's configs folder, component_source.h), applies the overrides and loads the
/// weights strictly. The spec's LoRAs are then fused (lora.h; only types registered with accepts_loras get any). Parameters are in the spec's dtype
/// (model_dtype: float32 by default, bfloat16 with `dtype: bf16`), adjusted per model class by
/// model_compute_dtype (e.g. AutoencoderKL's force_upcast).
#include <memory>

#include "tessera/components.h"
#include "models/adapters/lora.h"
#include "models/common/precision.h"
#include "models/loading/component_source.h"
#include "models/loading/config_reader.h"
#include "models/loading/skip_init.h"
#include "models/loading/diffusers_folder.h"
#include "models/loading/state_dict.h"

namespace tessera {

/// The dtype a model of config type `Config` computes in when `requested` is asked for; the requested one unless
/// a model class says otherwise with a non-template overload for its config type (found by ADL).
template <typename Config>
at::ScalarType model_compute_dtype(const Config& /*config*/, at::ScalarType requested) {
  return requested;
}

/// `Impl` is a torch::nn::Module + Component constructible from `Config`; `Config::from_config(ModelConfig&)`.
template <typename Impl, typename Config>
ComponentPtr create_diffusers_model(const ComponentSpec& spec, const std::string& weights_name = kDiffusersWeightsName) {
  if (spec.creation == Creation::FromConfig) {
    ModelConfig cfg(nlohmann::json::object(), "component '" + spec.name + "' config");
    cfg.apply_overrides(spec.config);
    Config config = Config::from_config(cfg);
    const at::ScalarType dtype = model_compute_dtype(config, model_dtype(spec));
    auto model = std::make_shared<Impl>(std::move(config));
    if (dtype != at::kFloat) model->to(dtype);
    fuse_component_loras(*model, spec, cfg.json());
    model->eval();
    return model;
  }
  const at::ScalarType requested = model_dtype(spec);
  ModelConfig cfg = pretrained_component_config(spec);
  cfg.apply_overrides(spec.config);
  Config config = Config::from_config(cfg);
  const at::ScalarType dtype = model_compute_dtype(config, requested);
  std::shared_ptr<Impl> model;
  {
    SkipRandomInit skip;  // every parameter is loaded below (strictly: none keeps its uninitialised memory)
    model = std::make_shared<Impl>(std::move(config));
  }
  LoadStateDictOptions options;
  options.dtype = dtype;
  load_pretrained_weights(*model, spec, cfg.json(), weights_name, options);
  fuse_component_loras(*model, spec, cfg.json());
  model->eval();
  return model;
}

}  // namespace tessera
