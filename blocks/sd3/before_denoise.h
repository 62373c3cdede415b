#pragma once
/// Stable Diffusion 3 / 3.5 blocks between encoding and the denoising loop: the flow-matching schedule
/// (text2image, or the strength-truncated one of image2image) and the initial latents of each workflow. Latents
/// are unpacked [B, C, H/f, W/f] (the transformer patchifies them itself).
#include "tessera/block.h"

namespace tessera {

/// sd3.set_timesteps — StableDiffusion3Pipeline's retrieve_timesteps: the scheduler's own sigmas (no custom
/// sigmas), mu = calculate_shift(image_seq_len, …) only when the scheduler uses dynamic shifting, image_seq_len =
/// (H/f/p)·(W/f/p) for the run's size (height / width default to transformer.sample_size × f).
class SD3SetTimestepsStep final : public LeafBlock {
 public:
  static constexpr const char* kId = "sd3.set_timesteps";
  static constexpr const char* kDescription =
      "Flow-matching schedule for SD3: scheduler.set_timesteps(n, mu when dynamically shifted) → timesteps";
  static std::vector<InputParam> params() { return {}; }
  explicit SD3SetTimestepsStep(const ValueMap& = {}) {}
  BlockSpec spec() const override;
  void run(Components& components, BlockState& state) const override;
};

/// sd3.img2img_set_timesteps — as sd3.set_timesteps, then StableDiffusion3Img2ImgPipeline.get_timesteps: the flow
/// rule t_start = int(n - min(n·strength, n)), the tail timesteps[t_start:] (begin index set on the scheduler),
/// and latent_timestep = the first of them repeated to the batch.
class SD3Img2ImgSetTimestepsStep final : public LeafBlock {
 public:
  static constexpr const char* kId = "sd3.img2img_set_timesteps";
  static constexpr const char* kDescription =
      "Flow-matching schedule for SD3 image2image: the tail kept by strength (t_start = int(n - n*strength)), and "
      "latent_timestep";
  /// Construction param: the strength when the input is absent (StableDiffusion3Img2ImgPipeline: 0.6).
  static inline const InputParam default_strength{"default_strength", Kind::Float,
                                                  "strength when the input is absent", false, Value(0.6)};
  static std::vector<InputParam> params() { return {default_strength}; }
  explicit SD3Img2ImgSetTimestepsStep(const ValueMap& params = {});
  BlockSpec spec() const override;
  void run(Components& components, BlockState& state) const override;

 private:
  double default_strength_;
};

/// sd3.prepare_latents — text2image's initial latents [B, transformer.in_channels, H/f, W/f]: given `latents`
/// (checked against that shape) or one standard normal draw from the run's generator (diffusers' randn_tensor),
/// not scaled (flow matching starts at sigma 1).
class SD3PrepareLatentsStep final : public LeafBlock {
 public:
  static constexpr const char* kId = "sd3.prepare_latents";
  static constexpr const char* kDescription = "Initial latents for SD3 text2image: given latents or seeded noise";
  static std::vector<InputParam> params() { return {}; }
  explicit SD3PrepareLatentsStep(const ValueMap& = {}) {}
  BlockSpec spec() const override;
  void run(Components& components, BlockState& state) const override;
};

/// sd3.img2img_prepare_latents — image2image's initial latents: image_latents expanded to the batch, noise of
/// their shape drawn from the run's generator (after the VAE sample), scheduler.scale_noise at latent_timestep:
/// sigma · noise + (1 - sigma) · image_latents.
class SD3Img2ImgPrepareLatentsStep final : public LeafBlock {
 public:
  static constexpr const char* kId = "sd3.img2img_prepare_latents";
  static constexpr const char* kDescription =
      "Initial latents for SD3 image2image: scale_noise(image_latents, latent_timestep, noise)";
  static std::vector<InputParam> params() { return {}; }
  explicit SD3Img2ImgPrepareLatentsStep(const ValueMap& = {}) {}
  BlockSpec spec() const override;
  void run(Components& components, BlockState& state) const override;
};

}  // namespace tessera
