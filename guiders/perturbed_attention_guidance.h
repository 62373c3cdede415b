#pragma once
/// Perturbed-Attention Guidance (Ahn et al. 2024), as diffusers.guiders.PerturbedAttentionGuidance: a third pass
/// on the conditional inputs with the self-attention scores of the chosen layers replaced by identity
/// (attention output = value), combined as in LayerPerturbationGuidance.
#include "guiders/layer_perturbation_guidance.h"

namespace tessera {

/// PAG. Config: guidance_scale 7.5, perturbed_guidance_scale 2.8, perturbed_guidance_start 0.01,
/// perturbed_guidance_stop 0.2, perturbed_guidance_layers (int | list) or perturbed_guidance_config
/// (LayerSkipConfig | list; forced to skip_attention_scores only, as diffusers does), guidance_rescale 0,
/// use_original_formulation false, start 0, stop 1, enabled. Identifier of the perturbed pass: pred_cond_skip.
class PerturbedAttentionGuidance : public LayerPerturbationGuidance {
 public:
  explicit PerturbedAttentionGuidance(GuiderConfigReader& config);
  std::string type() const override { return "PerturbedAttentionGuidance"; }
};

}  // namespace tessera
