#pragma once
/// APG-Mix, as diffusers.guiders.AdaptiveProjectedMixGuidance: plain CFG (guidance_scale) for the first steps,
/// then APG (adaptive_projected_guidance_scale) from step adaptive_projected_guidance_start_step + 1 on; the
/// momentum buffer is updated with the CFG update during the CFG steps too.
#include <optional>

#include "guiders/adaptive_projected_guidance.h"

namespace tessera {

/// APG-Mix. Config: guidance_scale 3.5, guidance_rescale 0, adaptive_projected_guidance_scale 10,
/// adaptive_projected_guidance_momentum -0.5, adaptive_projected_guidance_rescale 10, eta 0,
/// use_original_formulation false, start 0, stop 1, adaptive_projected_guidance_start_step 5, enabled.
class AdaptiveProjectedMixGuidance : public Guider {
 public:
  explicit AdaptiveProjectedMixGuidance(GuiderConfigReader& config);
  std::string type() const override { return "AdaptiveProjectedMixGuidance"; }
  int64_t num_conditions() const override { return is_cfg_enabled() ? 2 : 1; }
  GuiderOutput forward(const std::map<std::string, at::Tensor>& preds) override;
  /// Whether this step uses APG rather than CFG.
  bool is_apg_enabled() const;

 protected:
  void on_prepare_inputs() override;

 private:
  double apg_scale_;
  std::optional<double> momentum_;
  double norm_threshold_;
  double eta_;
  int64_t apg_start_step_;
  std::optional<MomentumBuffer> momentum_buffer_;
};

}  // namespace tessera
