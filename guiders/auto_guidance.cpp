#include "guiders/auto_guidance.h"

#include "tessera/error.h"
#include "guiders/guider_config.h"
#include "guiders/layer_perturbation_guidance.h"

namespace tessera {

namespace {

std::vector<LayerHook> auto_guidance_hooks(GuiderConfigReader& config) {
  const auto dropout = config.get_optional_float("dropout", std::nullopt);
  if (config.has("auto_guidance_layers") && !config.has("auto_guidance_config") && !dropout)
    throw ValidationError("AutoGuidance: `dropout` must be given with `auto_guidance_layers`");
  LayerSkipConfig per_layer;
  if (dropout) per_layer.dropout = *dropout;
  std::vector<LayerHook> hooks;
  for (const LayerSkipConfig& c :
       read_layer_skip_configs(config, "auto_guidance_layers", "auto_guidance_config", per_layer))
    for (LayerHook& h : layer_hooks_from_config(c)) hooks.push_back(std::move(h));
  return hooks;
}

}  // namespace

AutoGuidance::AutoGuidance(GuiderConfigReader& config) : Guider(config), hooks_(auto_guidance_hooks(config)) {}

std::vector<Guider::PassPlan> AutoGuidance::plan() const {
  std::vector<PassPlan> out{{"pred_cond", 0, {}}};
  if (is_cfg_enabled()) out.push_back({"pred_uncond", 1, hooks_});
  return out;
}

GuiderOutput AutoGuidance::forward(const std::map<std::string, at::Tensor>& preds) {
  const at::Tensor& pred_cond = require_pred(preds, "pred_cond", type());
  if (!is_cfg_enabled()) return {maybe_rescale(pred_cond, pred_cond), pred_cond, {}};
  const at::Tensor& pred_uncond = require_pred(preds, "pred_uncond", type());
  return {maybe_rescale(cfg_combine(pred_cond, pred_uncond, guidance_scale_), pred_cond), pred_cond, pred_uncond};
}

}  // namespace tessera
