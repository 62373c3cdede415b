#pragma once
/// CFG-Zero* (Fan et al. 2025), as diffusers.guiders.ClassifierFreeZeroStarGuidance: the unconditional
/// prediction is scaled by the optimal alpha = <cond, uncond> / (|uncond|^2 + 1e-8) per sample before CFG, and
/// the first `zero_init_steps` steps return zeros.
#include "guiders/guider.h"

namespace tessera {

/// CFG-Zero*. Config: guidance_scale 7.5, zero_init_steps 1, guidance_rescale 0, use_original_formulation false,
/// start 0, stop 1, enabled.
class ClassifierFreeZeroStarGuidance : public Guider {
 public:
  explicit ClassifierFreeZeroStarGuidance(GuiderConfigReader& config);
  std::string type() const override { return "ClassifierFreeZeroStarGuidance"; }
  int64_t num_conditions() const override { return is_cfg_enabled() ? 2 : 1; }
  GuiderOutput forward(const std::map<std::string, at::Tensor>& preds) override;

 private:
  int64_t zero_init_steps_;
};

/// diffusers' cfg_zero_star_scale on flattened [B, N] predictions: per-row <cond, uncond> / (|uncond|^2 + eps),
/// computed in float32, returned in cond's dtype, shape [B, 1].
at::Tensor cfg_zero_star_scale(const at::Tensor& cond, const at::Tensor& uncond, double eps = 1e-8);

}  // namespace tessera
