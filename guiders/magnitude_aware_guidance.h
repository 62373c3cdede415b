#pragma once
/// Magnitude-aware guidance (MAMBO-G), as diffusers.guiders.MagnitudeAwareGuidance: the CFG scale shrinks with
/// the relative size of the update, per sample:
///   r = |cond - uncond| / |uncond|;  w = 1 + (guidance_scale - 1) * exp(-alpha * r)   (guidance_scale * exp(…)
///   with use_original_formulation);  pred = uncond + w * (cond - uncond)
#include "guiders/guider.h"

namespace tessera {

/// MAMBO-G. Config: guidance_scale 10, alpha 8, guidance_rescale 0, use_original_formulation false, start 0,
/// stop 1, enabled.
class MagnitudeAwareGuidance : public Guider {
 public:
  explicit MagnitudeAwareGuidance(GuiderConfigReader& config);
  std::string type() const override { return "MagnitudeAwareGuidance"; }
  int64_t num_conditions() const override { return is_cfg_enabled() ? 2 : 1; }
  GuiderOutput forward(const std::map<std::string, at::Tensor>& preds) override;

 private:
  double alpha_;
};

/// diffusers' mambo_guidance.
at::Tensor mambo_guidance(const at::Tensor& pred_cond, const at::Tensor& pred_uncond, double guidance_scale,
                          double alpha, bool use_original_formulation);

}  // namespace tessera
