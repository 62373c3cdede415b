#pragma once
/// Stable Diffusion blocks between encoding and the denoising loop: the step schedule (text2image, or the
/// strength-truncated one of image2image / inpainting) and the initial latents of each workflow.
#include "tessera/block.h"

namespace tessera {

/// sd.set_timesteps — scheduler.set_timesteps(num_inference_steps); outputs its timesteps.
class SDSetTimestepsStep final : public LeafBlock {
 public:
  static constexpr const char* kId = "sd.set_timesteps";
  static constexpr const char* kDescription = "scheduler.set_timesteps(num_inference_steps) → timesteps";
  static std::vector<InputParam> params() { return {}; }
  explicit SDSetTimestepsStep(const ValueMap& = {}) {}
  BlockSpec spec() const override;
  void run(Components& components, BlockState& state) const override;
};

/// sd.img2img_set_timesteps — the last int(n*strength) steps of the schedule (diffusers' get_timesteps, begin
/// index set on the scheduler) and latent_timestep, the first of them repeated per image.
class SDImg2ImgSetTimestepsStep final : public LeafBlock {
 public:
  static constexpr const char* kId = "sd.img2img_set_timesteps";
  static constexpr const char* kDescription =
      "Schedule for image2image / inpainting: the last int(n*strength) timesteps, and latent_timestep";
  /// Construction param: the strength when the `strength` input is absent (diffusers' pipelines differ).
  static inline const InputParam default_strength{"default_strength", Kind::Float,
                                                  "strength when the input is absent", false, Value(0.8)};
  static std::vector<InputParam> params() { return {default_strength}; }
  explicit SDImg2ImgSetTimestepsStep(const ValueMap& params = {});
  BlockSpec spec() const override;
  void run(Components& components, BlockState& state) const override;

 private:
  double default_strength_;
};

/// sd.prepare_latents — text2image's initial latents [B*n, C, H/f, W/f]: given `latents` (checked) or standard
/// normal noise from the run's generator (diffusers' draw), × the scheduler's init_noise_sigma. Height and width
/// default to unet.sample_size × the VAE factor.
class SDPrepareLatentsStep final : public LeafBlock {
 public:
  static constexpr const char* kId = "sd.prepare_latents";
  static constexpr const char* kDescription =
      "Initial latents for text2image: given latents or seeded noise, × init_noise_sigma";
  /// Construction param: default a missing height or width on its own (SDXL) instead of both together as soon as
  /// one is missing (StableDiffusionPipeline's `if not height or not width`).
  static inline const InputParam independent_sizes{"independent_sizes", Kind::Bool,
                                                   "default height and width each on its own (SDXL's rule)", false,
                                                   Value(false)};
  static std::vector<InputParam> params() { return {independent_sizes}; }
  explicit SDPrepareLatentsStep(const ValueMap& params = {});
  BlockSpec spec() const override;
  void run(Components& components, BlockState& state) const override;

 private:
  bool independent_sizes_;
};

/// sd.img2img_prepare_latents — image2image's initial latents: image_latents expanded to the batch, noise
/// drawn from the run's generator, scheduler.add_noise at latent_timestep.
class SDImg2ImgPrepareLatentsStep final : public LeafBlock {
 public:
  static constexpr const char* kId = "sd.img2img_prepare_latents";
  static constexpr const char* kDescription =
      "Initial latents for image2image: add_noise(image_latents, noise, latent_timestep)";
  static std::vector<InputParam> params() { return {}; }
  explicit SDImg2ImgPrepareLatentsStep(const ValueMap& = {}) {}
  BlockSpec spec() const override;
  void run(Components& components, BlockState& state) const override;
};

/// sd.inpaint_prepare_latents — StableDiffusionInpaintPipeline's prepare_latents + prepare_mask_latents, with
/// its random draws in its order: image latents (when the UNet has 4 channels or strength < 1), the noise, then
/// the masked image's latents. mask_image is made grayscale, resized, binarized (1 = repaint); the masked image is
/// image × (mask < 0.5); the mask is resized to latent size (nearest). strength 1 starts from pure noise ×
/// init_noise_sigma, otherwise from add_noise(image_latents, noise, latent_timestep).
class SDInpaintPrepareLatentsStep final : public LeafBlock {
 public:
  static constexpr const char* kId = "sd.inpaint_prepare_latents";
  static constexpr const char* kDescription =
      "Initial latents, mask and masked-image latents for inpainting (4- or 9-channel UNet)";
  static std::vector<InputParam> params() { return {}; }
  explicit SDInpaintPrepareLatentsStep(const ValueMap& = {}) {}
  BlockSpec spec() const override;
  void run(Components& components, BlockState& state) const override;
};

}  // namespace tessera
