#pragma once
/// Skip Layer Guidance (StabilityAI, SD3.5), as diffusers.guiders.SkipLayerGuidance: a third pass on the
/// conditional inputs with the chosen transformer blocks skipped (by default attention and feed-forward, i.e. the
/// whole block), combined as in LayerPerturbationGuidance.
#include "guiders/layer_perturbation_guidance.h"

namespace tessera {

/// SLG. Config: guidance_scale 7.5, skip_layer_guidance_scale 2.8, skip_layer_guidance_start 0.01,
/// skip_layer_guidance_stop 0.2, skip_layer_guidance_layers (int | list) or skip_layer_config (LayerSkipConfig |
/// list), guidance_rescale 0, use_original_formulation false, start 0, stop 1, enabled.
/// Identifier of the perturbed pass: pred_cond_skip.
class SkipLayerGuidance : public LayerPerturbationGuidance {
 public:
  explicit SkipLayerGuidance(GuiderConfigReader& config);
  std::string type() const override { return "SkipLayerGuidance"; }
};

}  // namespace tessera
