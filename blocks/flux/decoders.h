#pragma once
/// FLUX.1's decoder block: packed latents → images.
#include "tessera/block.h"

namespace tessera {

/// flux.decode — unpack [B, (h/2)(w/2), 4C] → [B, C, h, w] for height × width, z / scaling_factor + shift_factor,
/// VAE decode, postprocess to [0, 1]. output_type latent keeps the packed latents and makes no image.
class FluxDecodeStep final : public LeafBlock {
 public:
  static constexpr const char* kId = "flux.decode";
  static constexpr const char* kDescription =
      "Unpack the latents, undo the VAE scaling and shift, decode to images in [0, 1]";
  static std::vector<InputParam> params() { return {}; }
  explicit FluxDecodeStep(const ValueMap& = {}) {}
  BlockSpec spec() const override;
  void run(Components& components, BlockState& state) const override;
};

}  // namespace tessera
