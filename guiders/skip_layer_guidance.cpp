#include "guiders/skip_layer_guidance.h"

#include "tessera/error.h"
#include "guiders/guider_config.h"

namespace tessera {

namespace {

double checked_start(GuiderConfigReader& config) {
  double start = config.get_float("skip_layer_guidance_start", 0.01);
  if (!(0.0 <= start && start < 1.0))
    throw ValidationError("SkipLayerGuidance: `skip_layer_guidance_start` must be in [0, 1), got " +
                          std::to_string(start));
  return start;
}

double checked_stop(GuiderConfigReader& config) {
  double start = config.get_float("skip_layer_guidance_start", 0.01);
  double stop = config.get_float("skip_layer_guidance_stop", 0.2);
  if (!(start <= stop && stop <= 1.0))
    throw ValidationError("SkipLayerGuidance: `skip_layer_guidance_stop` must be in [start, 1], got " +
                          std::to_string(stop));
  return stop;
}

std::vector<LayerHook> slg_hooks(GuiderConfigReader& config) {
  std::vector<LayerHook> hooks;
  for (const LayerSkipConfig& c :
       read_layer_skip_configs(config, "skip_layer_guidance_layers", "skip_layer_config", LayerSkipConfig{}))
    for (LayerHook& h : layer_hooks_from_config(c)) hooks.push_back(std::move(h));
  return hooks;
}

}  // namespace

SkipLayerGuidance::SkipLayerGuidance(GuiderConfigReader& config)
    : LayerPerturbationGuidance(config, {"pred_cond_skip", config.get_float("skip_layer_guidance_scale", 2.8),
                                         checked_start(config), checked_stop(config), slg_hooks(config)}) {}

}  // namespace tessera
