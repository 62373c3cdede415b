#pragma once
/// Tangential Classifier-Free Guidance (Kwon et al. 2025), as diffusers.guiders.TangentialClassifierFreeGuidance:
/// pred_uncond is replaced by its projection on the first right-singular vector of [pred_cond; pred_uncond]
/// (per sample) before CFG.
/// Fix over diffusers: its `is_conditional` reads a field that does not exist (`_num_outputs_prepared`); here
/// pass roles come from the pass plan, so nothing depends on it.
#include "guiders/guider.h"

namespace tessera {

/// TCFG. Config: guidance_scale 7.5, guidance_rescale 0, use_original_formulation false, start 0, stop 1, enabled.
class TangentialClassifierFreeGuidance : public Guider {
 public:
  explicit TangentialClassifierFreeGuidance(GuiderConfigReader& config) : Guider(config) {}
  std::string type() const override { return "TangentialClassifierFreeGuidance"; }
  int64_t num_conditions() const override { return is_cfg_enabled() ? 2 : 1; }
  GuiderOutput forward(const std::map<std::string, at::Tensor>& preds) override;
};

/// The TCFG combination (diffusers' tangential normalized_guidance); SVD in float32.
at::Tensor tangential_guidance(const at::Tensor& pred_cond, const at::Tensor& pred_uncond, double guidance_scale,
                               bool use_original_formulation);

}  // namespace tessera
