#pragma once
/// Stable Diffusion 3 / 3.5's last block: latents → images with the VAE.
#include "tessera/block.h"

namespace tessera {

/// sd3.decode — images = postprocess(vae.decode(latents / scaling_factor + shift_factor)), as
/// StableDiffusion3Pipeline: (x / 2 + 0.5).clamp(0, 1). output_type "latent" skips decoding (images stays unset,
/// `latents` is the result); "png", "pil", "np", "pt" and "tensor" all decode.
class SD3DecodeStep final : public LeafBlock {
 public:
  static constexpr const char* kId = "sd3.decode";
  static constexpr const char* kDescription =
      "Decode latents with the VAE (÷ scaling_factor + shift_factor) into images in [0, 1] (output_type latent: "
      "skip decoding)";
  static std::vector<InputParam> params() { return {}; }
  explicit SD3DecodeStep(const ValueMap& = {}) {}
  BlockSpec spec() const override;
  void run(Components& components, BlockState& state) const override;
};

}  // namespace tessera
