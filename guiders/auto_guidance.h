#pragma once
/// AutoGuidance (Karras et al. 2024), as diffusers.guiders.AutoGuidance: the "unconditional" pass is a degraded
/// model — the unconditional inputs with the chosen layers skipped or put through dropout — and the passes are
/// combined as in CFG. The dropout is random (F.dropout, training mode, as in diffusers), so results depend on the
/// global RNG.
#include "guiders/guider.h"

namespace tessera {

/// AutoGuidance. Config: guidance_scale 7.5, auto_guidance_layers (int | list, needs dropout) or
/// auto_guidance_config (LayerSkipConfig | list), dropout, guidance_rescale 0, use_original_formulation false,
/// start 0, stop 1, enabled.
class AutoGuidance : public Guider {
 public:
  explicit AutoGuidance(GuiderConfigReader& config);
  std::string type() const override { return "AutoGuidance"; }
  int64_t num_conditions() const override { return is_cfg_enabled() ? 2 : 1; }
  GuiderOutput forward(const std::map<std::string, at::Tensor>& preds) override;
  const std::vector<LayerHook>& hooks() const { return hooks_; }

 protected:
  std::vector<PassPlan> plan() const override;

 private:
  std::vector<LayerHook> hooks_;
};

}  // namespace tessera
