#pragma once
/// The Stable Diffusion 3 / 3.5 denoising loop's transformer step (the recipe loops it over timesteps, followed by
/// sd.loop_scheduler_step, which restores a flow scheduler from the 4-value scheduler_setup):
///   denoiser sd3.loop_denoiser       the guider's passes through the transformer (batched into one call), combined
///   step     sd.loop_scheduler_step  scheduler.step → latents
#include "tessera/block.h"

namespace tessera {

/// The guider sees the fields hidden_states (the latents, not conditioned), encoder_hidden_states
/// (prompt_embeds, negative_prompt_embeds) and pooled_projections (pooled_prompt_embeds, negative pooled); it
/// decides the passes of this step (CFG: conditional and unconditional; SkipLayerGuidance adds a conditional
/// pass with transformer blocks skipped through its layer hooks), which run as one batched transformer call
/// unless the pipeline config `batch_passes` is false. The timestep is t (sigma · 1000, as the scheduler holds
/// it) expanded to each call's batch, as StableDiffusion3Pipeline passes it; it is written out as `timestep`.
class SD3LoopDenoiserStep final : public LeafBlock {
 public:
  static constexpr const char* kId = "sd3.loop_denoiser";
  static constexpr const char* kDescription =
      "SD3 transformer prediction for this step through the guider (set_state, passes batched into one call, "
      "combine)";
  static std::vector<InputParam> params() { return {}; }
  explicit SD3LoopDenoiserStep(const ValueMap& = {}) {}
  BlockSpec spec() const override;
  void run(Components& components, BlockState& state) const override;
};

}  // namespace tessera
