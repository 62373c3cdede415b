#pragma once
/// SDXL micro-conditioning.
#include "tessera/block.h"

namespace tessera {

/// sdxl.prepare_additional_conditioning — add_time_ids = original_size + crops_coords_top_left + target_size
/// ([B*n, 6] float32), as StableDiffusionXLPipeline._get_add_time_ids; original/target size default to
/// height × width; the negative ids equal the positive ones unless negative_original_size and
/// negative_target_size are both given (then with negative_crops_coords_top_left, default (0, 0)), as
/// StableDiffusionXLPipeline does. The UNet's projection_class_embeddings_input_dim
/// must equal addition_time_embed_dim × 6 + the pooled width (checked: a mismatch names both numbers).
class SDXLPrepareAdditionalConditioningStep final : public LeafBlock {
 public:
  static constexpr const char* kId = "sdxl.prepare_additional_conditioning";
  static constexpr const char* kDescription =
      "SDXL add_time_ids from original size, crop top-left and target size (and the negative ids)";
  static std::vector<InputParam> params() { return {}; }
  explicit SDXLPrepareAdditionalConditioningStep(const ValueMap& = {}) {}
  BlockSpec spec() const override;
  void run(Components& components, BlockState& state) const override;
};

}  // namespace tessera
