#pragma once
/// The FLUX.1 denoising loop's transformer step (the recipe loops it with sd.loop_scheduler_step over timesteps):
/// the guider's passes through FluxTransformer2DModel, batched into one call.
#include "tessera/block.h"

namespace tessera {

/// flux.loop_denoiser — transformer(hidden_states = latents, timestep = t / 1000 per row, guidance (dev models:
/// guidance_scale per row), pooled_projections, encoder_hidden_states, txt_ids, img_ids) through the guider. The
/// guider sees the fields hidden_states, encoder_hidden_states and pooled_projections; FLUX's true CFG is a
/// ClassifierFreeGuidance guider with guidance_scale = true_cfg_scale, its two passes batched into one call
/// (FluxPipeline makes two calls: equal up to float rounding). `batch_passes: false` makes one call per pass.
class FluxLoopDenoiserStep final : public LeafBlock {
 public:
  static constexpr const char* kId = "flux.loop_denoiser";
  static constexpr const char* kDescription =
      "FLUX transformer prediction for this step through the guider (passes batched into one call)";
  static std::vector<InputParam> params() { return {}; }
  explicit FluxLoopDenoiserStep(const ValueMap& = {}) {}
  BlockSpec spec() const override;
  void run(Components& components, BlockState& state) const override;
};

}  // namespace tessera
