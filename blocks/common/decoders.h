#pragma once
/// common.* blocks that turn latents into outputs.
#include "tessera/block.h"

namespace tessera {

/// common.to_image: latents [B, C, H, W] → images [B, 3, H, W] in [0, 1] without a VAE. C == 1 is
/// replicated to gray RGB, C ≥ 3 keeps the first three channels (C == 2 is an InputError); each image is
/// then min-max normalised on its own to span [0, 1] (a constant image becomes mid-gray 0.5).
class ToImageStep final : public LeafBlock {
 public:
  static constexpr const char* kId = "common.to_image";
  static constexpr const char* kDescription =
      "Latents [B, C, H, W] to images [B, 3, H, W] in [0, 1]: gray for C = 1, first 3 channels for C >= 3, "
      "min-max normalised per image";

  static inline const InputParam latents{"latents", Kind::Tensor, "Latents [B, C, H, W], C = 1 or C >= 3", true};
  static inline const OutputParam images{"images", Kind::Image, "Images [B, 3, H, W] float32 in [0, 1]"};
  static std::vector<InputParam> params() { return {}; }

  explicit ToImageStep(const ValueMap& params = {}) {}
  BlockSpec spec() const override;
  void run(Components& components, BlockState& state) const override;
};

}  // namespace tessera
