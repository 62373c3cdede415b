#pragma once
/// The Stable Diffusion denoising loop's children (one iteration each; the recipe loops them over timesteps):
///   before   sd.loop_before_denoiser   scale_model_input (+ mask and masked-image latents for a 9-channel UNet)
///   denoiser sd.loop_denoiser          the guider's passes through the UNet (batched into one call), combined
///   step     sd.loop_scheduler_step    scheduler.step → latents
///   blend    sd.loop_inpaint_blend     4-channel inpainting: keep the unmasked area at the image's noise level
#include <functional>
#include <map>
#include <string>

#include "tessera/block.h"
#include "guiders/guider.h"

namespace tessera {

struct UNet2DConditionInputs;

namespace sd {
/// The pipeline config that batches a step's guider passes into one model call (sd.loop_denoiser and its variants).
extern const ConfigSpec batch_passes;

/// Runs inside each UNet call of a step, on that call's batched guider inputs, before the UNet: it may fill the
/// UNet's extra inputs (a ControlNet's residuals).
using UNetCallHook =
    std::function<void(const std::map<std::string, at::Tensor>& inputs, UNet2DConditionInputs& unet_inputs)>;

/// The guided UNet prediction of this step, as sd.loop_denoiser computes it (guidance scale applied, guider state
/// set, the fields prompt_embeds / pooled / time ids / IP-Adapter tokens, the guider's passes batched unless
/// `batch_passes` is false, combined). `extra_fields` join the guider's fields (each pass gets its tuple element,
/// so they are batched with the passes); `before_unet` (may be empty) runs in every UNet call. The block must
/// declare the denoiser's spec.
at::Tensor guided_unet_prediction(Components& components, BlockState& state, const GuiderFields& extra_fields,
                                  const UNetCallHook& before_unet);
}  // namespace sd

class SDLoopBeforeDenoiserStep final : public LeafBlock {
 public:
  static constexpr const char* kId = "sd.loop_before_denoiser";
  static constexpr const char* kDescription =
      "latent_model_input = scheduler.scale_model_input(latents, t), with mask and masked_image_latents "
      "appended along channels when given (inpainting UNet)";
  static std::vector<InputParam> params() { return {}; }
  explicit SDLoopBeforeDenoiserStep(const ValueMap& = {}) {}
  BlockSpec spec() const override;
  void run(Components& components, BlockState& state) const override;
};

/// The guider sees the fields encoder_hidden_states (prompt_embeds, negative_prompt_embeds), for SDXL
/// text_embeds (pooled) and time_ids (add_time_ids), and with an IP-Adapter ip_hidden_states (ip_adapter_tokens); it decides the passes of this step, which run as one batched
/// UNet call unless the pipeline config `batch_passes` is false (then one call per pass, diffusers' order).
class SDLoopDenoiserStep final : public LeafBlock {
 public:
  static constexpr const char* kId = "sd.loop_denoiser";
  static constexpr const char* kDescription =
      "UNet prediction for this step through the guider (set_state, passes batched into one call, combine)";
  static std::vector<InputParam> params() { return {}; }
  explicit SDLoopDenoiserStep(const ValueMap& = {}) {}
  BlockSpec spec() const override;
  void run(Components& components, BlockState& state) const override;
};

class SDLoopSchedulerStep final : public LeafBlock {
 public:
  static constexpr const char* kId = "sd.loop_scheduler_step";
  static constexpr const char* kDescription =
      "latents = scheduler.step(noise_pred, t, latents) (eta and the run's generator passed on)";
  static std::vector<InputParam> params() { return {}; }
  explicit SDLoopSchedulerStep(const ValueMap& = {}) {}
  BlockSpec spec() const override;
  void run(Components& components, BlockState& state) const override;
};

/// After step i: latents = (1 - mask) * add_noise(image_latents, noise, timesteps[i+1]) + mask * latents (the
/// clean image_latents after the last step), as StableDiffusionInpaintPipeline does for a 4-channel UNet.
class SDLoopInpaintBlendStep final : public LeafBlock {
 public:
  static constexpr const char* kId = "sd.loop_inpaint_blend";
  static constexpr const char* kDescription =
      "Inpainting with a 4-channel UNet: re-impose the noised input image outside the mask after each step";
  static std::vector<InputParam> params() { return {}; }
  explicit SDLoopInpaintBlendStep(const ValueMap& = {}) {}
  BlockSpec spec() const override;
  void run(Components& components, BlockState& state) const override;
};

}  // namespace tessera
