#include "guiders/layer_perturbation_guidance.h"

#include "tessera/error.h"
#include "guiders/guider_config.h"

namespace tessera {

LayerPerturbationGuidance::LayerPerturbationGuidance(GuiderConfigReader& config, Perturbation perturbation)
    : Guider(config), perturbation_(std::move(perturbation)) {}

bool LayerPerturbationGuidance::is_perturbation_enabled() const {
  if (!enabled_) return false;
  return in_window(perturbation_.start, perturbation_.stop, /*exclusive_start=*/true) &&
         !is_close(perturbation_.scale, 0.0);
}

int64_t LayerPerturbationGuidance::num_conditions() const {
  return 1 + (is_cfg_enabled() ? 1 : 0) + (is_perturbation_enabled() ? 1 : 0);
}

std::vector<Guider::PassPlan> LayerPerturbationGuidance::plan() const {
  std::vector<PassPlan> out{{"pred_cond", 0, {}}};
  if (is_cfg_enabled()) out.push_back({"pred_uncond", 1, {}});
  if (is_perturbation_enabled()) out.push_back({perturbation_.identifier, 0, perturbation_.hooks});
  return out;
}

GuiderOutput LayerPerturbationGuidance::forward(const std::map<std::string, at::Tensor>& preds) {
  const at::Tensor& pred_cond = require_pred(preds, "pred_cond", type());
  const bool cfg = is_cfg_enabled();
  const bool perturbed = is_perturbation_enabled();
  at::Tensor pred_uncond = cfg ? require_pred(preds, "pred_uncond", type()) : at::Tensor();
  at::Tensor pred;
  if (!cfg && !perturbed) {
    pred = pred_cond;
  } else if (!cfg) {
    const at::Tensor& pred_perturbed = require_pred(preds, perturbation_.identifier, type());
    pred = cfg_combine(pred_cond, pred_perturbed, perturbation_.scale);
  } else if (!perturbed) {
    pred = cfg_combine(pred_cond, pred_uncond, guidance_scale_);
  } else {
    const at::Tensor& pred_perturbed = require_pred(preds, perturbation_.identifier, type());
    at::Tensor shift = pred_cond - pred_uncond;
    at::Tensor shift_perturbed = pred_cond - pred_perturbed;
    pred = use_original_formulation_ ? pred_cond : pred_uncond;
    pred = pred + guidance_scale_ * shift + perturbation_.scale * shift_perturbed;
  }
  return {maybe_rescale(pred, pred_cond), pred_cond, pred_uncond};
}

std::vector<LayerSkipConfig> read_layer_skip_configs(GuiderConfigReader& config, const std::string& layers_key,
                                                     const std::string& config_key, const LayerSkipConfig& per_layer) {
  auto layers = config.get_int_list(layers_key);
  auto configs = config.get_json(config_key);
  const std::string what = config.type() + "." + config_key;
  if (!layers && !configs)
    throw ValidationError(config.type() + " needs `" + layers_key + "` or `" + config_key + "`");
  if (layers && configs)
    throw ValidationError(config.type() + ": give only one of `" + layers_key + "` and `" + config_key + "`");
  std::vector<LayerSkipConfig> out;
  if (layers) {
    for (int64_t layer : *layers) {
      LayerSkipConfig c = per_layer;
      c.indices = {layer};
      c.validate(config.type() + "." + layers_key);
      out.push_back(c);
    }
    if (out.empty()) throw ValidationError(config.type() + ": `" + layers_key + "` is empty");
  } else if (configs->is_object()) {
    out.push_back(LayerSkipConfig::from_json(*configs, what));
  } else if (configs->is_array() && !configs->empty()) {
    for (size_t i = 0; i < configs->size(); ++i)
      out.push_back(LayerSkipConfig::from_json((*configs)[i], what + "[" + std::to_string(i) + "]"));
  } else {
    throw ValidationError("field '" + config_key + "' of guider " + config.type() +
                          " must be a LayerSkipConfig map or a non-empty list of them, got " + configs->dump());
  }
  return out;
}

}  // namespace tessera
