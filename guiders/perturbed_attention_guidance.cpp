#include "guiders/perturbed_attention_guidance.h"

#include <spdlog/spdlog.h>

#include "tessera/error.h"
#include "guiders/guider_config.h"

namespace tessera {

namespace {

std::vector<LayerHook> pag_hooks(GuiderConfigReader& config) {
  auto layers = config.get_int_list("perturbed_guidance_layers");
  std::vector<LayerSkipConfig> configs;
  if (layers) {
    if (config.has("perturbed_guidance_config"))
      throw ValidationError(
          "PerturbedAttentionGuidance: give only one of `perturbed_guidance_layers` and `perturbed_guidance_config`");
    config.get_json("perturbed_guidance_config");
    LayerSkipConfig c;
    c.indices = *layers;
    c.skip_attention = false;
    c.skip_attention_scores = true;
    c.skip_ff = false;
    configs.push_back(c);
  } else {
    configs = read_layer_skip_configs(config, "perturbed_guidance_layers", "perturbed_guidance_config", {});
  }
  std::vector<LayerHook> hooks;
  for (LayerSkipConfig& c : configs) {
    if (c.skip_attention || !c.skip_attention_scores || c.skip_ff)
      spdlog::warn("PerturbedAttentionGuidance perturbs attention scores only; setting skip_attention=false, "
                   "skip_attention_scores=true, skip_ff=false for layers of '{}'", c.fqn);
    c.skip_attention = false;
    c.skip_attention_scores = true;
    c.skip_ff = false;
    c.validate("PerturbedAttentionGuidance.perturbed_guidance_config");
    for (LayerHook& h : layer_hooks_from_config(c)) hooks.push_back(std::move(h));
  }
  return hooks;
}

}  // namespace

PerturbedAttentionGuidance::PerturbedAttentionGuidance(GuiderConfigReader& config)
    : LayerPerturbationGuidance(config, {"pred_cond_skip", config.get_float("perturbed_guidance_scale", 2.8),
                                         config.get_float("perturbed_guidance_start", 0.01),
                                         config.get_float("perturbed_guidance_stop", 0.2), pag_hooks(config)}) {}

}  // namespace tessera
