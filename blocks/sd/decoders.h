#pragma once
/// Stable Diffusion's last block: latents → images with the VAE.
#include "tessera/block.h"

namespace tessera {

/// sd.decode — images = (vae.decode(latents / scaling_factor) / 2 + 0.5).clamp(0, 1), as diffusers'
/// decode + VaeImageProcessor.postprocess. output_type "latent" skips decoding (images stays unset, `latents` is
/// the result); "png", "pil", "np", "pt" and "tensor" all decode.
class SDDecodeStep final : public LeafBlock {
 public:
  static constexpr const char* kId = "sd.decode";
  static constexpr const char* kDescription =
      "Decode latents with the VAE into images in [0, 1] (output_type latent: skip decoding)";
  static std::vector<InputParam> params() { return {}; }
  explicit SDDecodeStep(const ValueMap& = {}) {}
  BlockSpec spec() const override;
  void run(Components& components, BlockState& state) const override;
};

}  // namespace tessera
