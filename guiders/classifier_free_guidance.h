#pragma once
/// Classifier-free guidance (Ho & Salimans 2022), as diffusers.guiders.ClassifierFreeGuidance:
///   pred = pred_uncond + guidance_scale * (pred_cond - pred_uncond)   (pred_cond + … with use_original_formulation)
/// then optional guidance_rescale. Active for steps in [int(start*T), int(stop*T)); outside it one pass suffices.
#include "guiders/guider.h"

namespace tessera {

/// CFG. Config: guidance_scale 7.5, guidance_rescale 0, use_original_formulation false, start 0, stop 1, enabled.
class ClassifierFreeGuidance : public Guider {
 public:
  explicit ClassifierFreeGuidance(GuiderConfigReader& config) : Guider(config) {}
  std::string type() const override { return "ClassifierFreeGuidance"; }
  int64_t num_conditions() const override { return is_cfg_enabled() ? 2 : 1; }
  GuiderOutput forward(const std::map<std::string, at::Tensor>& preds) override;
};

}  // namespace tessera
