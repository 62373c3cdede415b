#pragma once
/// FLUX.1 blocks between encoding and the denoising loop: the flow schedule (custom sigmas linspace(1, 1/n, n),
/// shifted by mu = calculate_shift(image tokens)), the packed initial latents with their position ids, and
/// image2image's strength-truncated schedule and noised image latents.
#include "tessera/block.h"

namespace tessera {

/// flux.set_timesteps — sigmas linspace(1, 1/n, n) and, with dynamic shifting, mu from the image's token count
/// (h/2)(w/2) for height × width (default 1024²); timesteps = sigmas × 1000.
class FluxSetTimestepsStep final : public LeafBlock {
 public:
  static constexpr const char* kId = "flux.set_timesteps";
  static constexpr const char* kDescription =
      "Flow schedule: sigmas linspace(1, 1/n, n), mu = calculate_shift(image tokens) → timesteps";
  static std::vector<InputParam> params() { return {}; }
  explicit FluxSetTimestepsStep(const ValueMap& = {}) {}
  BlockSpec spec() const override;
  void run(Components& components, BlockState& state) const override;
};

/// flux.img2img_set_timesteps — the same schedule, then the flow strength rule: t_start = int(n - n*strength),
/// only timesteps[t_start:] run (begin index set); latent_timestep = the first kept timestep per image.
class FluxImg2ImgSetTimestepsStep final : public LeafBlock {
 public:
  static constexpr const char* kId = "flux.img2img_set_timesteps";
  static constexpr const char* kDescription =
      "Flow schedule for image2image: the tail int(n - n*strength) onwards, and latent_timestep";
  static std::vector<InputParam> params() { return {}; }
  explicit FluxImg2ImgSetTimestepsStep(const ValueMap& = {}) {}
  BlockSpec spec() const override;
  void run(Components& components, BlockState& state) const override;
};

/// flux.prepare_latents — text2image's packed latents: given `latents` [B, S, 4C] (checked), or randn
/// [B, C, h, w] (C = in_channels / 4) from the run's generator, packed 2×2; plus latent_image_ids.
class FluxPrepareLatentsStep final : public LeafBlock {
 public:
  static constexpr const char* kId = "flux.prepare_latents";
  static constexpr const char* kDescription =
      "Initial packed latents [B, (h/2)(w/2), 4C] (given or seeded noise) and their position ids";
  static std::vector<InputParam> params() { return {}; }
  explicit FluxPrepareLatentsStep(const ValueMap& = {}) {}
  BlockSpec spec() const override;
  void run(Components& components, BlockState& state) const override;
};

/// flux.img2img_prepare_latents — image2image's packed latents: noise randn [B, C, h, w] (after the VAE's draw),
/// scheduler.scale_noise(image_latents, latent_timestep, noise), packed; plus latent_image_ids.
class FluxImg2ImgPrepareLatentsStep final : public LeafBlock {
 public:
  static constexpr const char* kId = "flux.img2img_prepare_latents";
  static constexpr const char* kDescription =
      "Initial packed latents for image2image: scale_noise(image_latents, latent_timestep, noise)";
  static std::vector<InputParam> params() { return {}; }
  explicit FluxImg2ImgPrepareLatentsStep(const ValueMap& = {}) {}
  BlockSpec spec() const override;
  void run(Components& components, BlockState& state) const override;
};

}  // namespace tessera
