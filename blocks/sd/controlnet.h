#pragma once
/// ControlNet for Stable Diffusion 1.x/2.x and SDXL (diffusers' StableDiffusion[XL]ControlNet*Pipeline and the
/// modular SDXL ControlNet steps), as two blocks the recipes pick up when `control_image` is given:
///   before   sd.prepare_control_image       the control image resized to the output size, batched → controlnet_cond
///   loop     sd.loop_controlnet_denoiser    sd.loop_denoiser with the ControlNet's residuals added to the UNet
/// Several ControlNets: the k-th's inputs carry the suffix _k (control_image_2, controlnet_conditioning_scale_2…);
/// the recipes prepare each image with its own sd.prepare_control_image (index k) and pick the denoiser for the
/// highest k given. The ControlNet runs inside the guider's model call, so with batched passes it runs once per step on the
/// batched input (not once per pass); in guess mode only on the conditional rows, the others get zero residuals.
#include "tessera/block.h"

namespace tessera {

namespace sd {
/// The ControlNet component (`controlnet` of the recipe: a diffusers ControlNetModel folder).
/// The k-th ControlNet component (`controlnet`, `controlnet_2`, … of the recipe: diffusers ControlNetModel folders).
ComponentSpec controlnet_component(int64_t k = 1);
}  // namespace sd

/// Control image → controlnet_cond [B·n, C, H, W] in [0, 1] (no normalisation), as diffusers' control image
/// processor (VaeImageProcessor with do_normalize=False) and prepare_image: the size is height/width when given,
/// else the input image's (image2image, inpainting), else the control image's own, each rounded down to a
/// multiple of the VAE factor; a control image of another size is resized to it; rows are repeated to the batch.
/// The size is written back as height/width, so the latents follow it (diffusers: `height, width =
/// image.shape[-2:]`). Checks the ControlNet fits the UNet (cross-attention width, SDXL conditioning, latent
/// channels) and the VAE (its conditioning embedding downsamples by the VAE factor) and the guidance window.
class SDPrepareControlImageStep final : public LeafBlock {
 public:
  static constexpr const char* kId = "sd.prepare_control_image";
  static constexpr const char* kDescription =
      "Resize and batch the control image for the ControlNet (controlnet_cond); the output size follows it";
  /// `index` k: which ControlNet (1: control_image, controlnet; k: control_image_k, controlnet_k, …_k).
  static std::vector<InputParam> params();
  explicit SDPrepareControlImageStep(const ValueMap& params = {});
  BlockSpec spec() const override;
  void run(Components& components, BlockState& state) const override;

 private:
  int64_t index_;
};

/// sd.loop_denoiser plus the ControlNet: at step i of N (the loop's timesteps) the residuals are scaled by
/// controlnet_conditioning_scale × keep, keep = 0 when i/N < control_guidance_start or (i+1)/N >
/// control_guidance_end (diffusers' controlnet_keep), else 1; a step with keep 0 skips the ControlNet (its
/// residuals would be exactly zero). guess_mode (or the ControlNet's global_pool_conditions) scales residual k of
/// n by logspace(-1, 0, n)[k] and runs the ControlNet on the conditional passes only. For an inpainting UNet the
/// ControlNet sees the latent channels of the UNet input (without the appended mask and masked-image latents).
class SDLoopControlNetDenoiserStep final : public LeafBlock {
 public:
  static constexpr const char* kId = "sd.loop_controlnet_denoiser";
  static constexpr const char* kDescription =
      "UNet prediction for this step through the guider, with the ControlNet's residuals (scale, guidance window, "
      "guess mode)";
  /// `controlnets` n: ControlNets 1 … n apply, each with its own control image, scale and window, their
  /// residuals summed (diffusers' MultiControlNetModel); guess_mode is shared.
  static std::vector<InputParam> params();
  explicit SDLoopControlNetDenoiserStep(const ValueMap& params = {});
  BlockSpec spec() const override;
  void run(Components& components, BlockState& state) const override;

 private:
  int64_t controlnets_;
};

}  // namespace tessera
