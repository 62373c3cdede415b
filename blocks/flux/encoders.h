#pragma once
/// FLUX.1 encoder blocks: the prompt through CLIP (pooled) and T5 (sequence), and image2image's image → latents.
#include "tessera/block.h"

namespace tessera {

/// flux.text_encoder — FluxPipeline.encode_prompt: CLIP at 77 tokens gives only its pooled output
/// (`pooled_prompt_embeds`), T5 at max_sequence_length tokens (padded, truncated, no attention mask) gives
/// `prompt_embeds`; `prompt_2` (default `prompt`) goes to T5. Negative embeddings are made only when the guider
/// needs an unconditional pass (true CFG), from `negative_prompt` (`negative_prompt_2` for T5), which must then be
/// given. `text_ids` are zeros [S_txt, 3]. Given `prompt_embeds` + `pooled_prompt_embeds`, the encoders are skipped.
class FluxTextEncoderStep final : public LeafBlock {
 public:
  static constexpr const char* kId = "flux.text_encoder";
  static constexpr const char* kDescription =
      "Encode the prompt with CLIP (pooled) and T5 (sequence); negatives only for true CFG";
  static std::vector<InputParam> params() { return {}; }
  explicit FluxTextEncoderStep(const ValueMap& = {}) {}
  BlockSpec spec() const override;
  void run(Components& components, BlockState& state) const override;
};

/// flux.vae_encode — image2image's image → image_latents: resized to height × width (default 1024², as
/// FluxImg2ImgPipeline), mapped to [-1, 1], encoded, sampled with the run's generator (its first draw), then
/// (z - shift_factor) * scaling_factor. [B, C, h, w], not packed.
class FluxVaeEncodeStep final : public LeafBlock {
 public:
  static constexpr const char* kId = "flux.vae_encode";
  static constexpr const char* kDescription =
      "Preprocess `image` (resize, [-1, 1]) and encode it into image_latents ((z - shift) * scale)";
  static std::vector<InputParam> params() { return {}; }
  explicit FluxVaeEncodeStep(const ValueMap& = {}) {}
  BlockSpec spec() const override;
  void run(Components& components, BlockState& state) const override;
};

}  // namespace tessera
