#pragma once
/// SDXL's text encoder step: two CLIP encoders and tokenizers.
#include "tessera/block.h"

namespace tessera {

/// sdxl.text_encoder — StableDiffusionXLPipeline.encode_prompt: prompt (text_encoder/tokenizer) and prompt_2
/// (default: prompt; text_encoder_2/tokenizer_2) each encoded with output_hidden_states; the penultimate hidden
/// states (hidden_states[-(clip_skip + 2)] with clip_skip) concatenated along features → prompt_embeds
/// [B, 77, D1 + D2]; pooled_prompt_embeds = text_encoder_2's text_embeds. Negatives only when the guider needs
/// them: zeros when no negative prompt is given and the config `force_zeros_for_empty_prompt` is true (SDXL's
/// model_index default), else encoded the same way (penultimate states, no clip_skip, as diffusers).
class SDXLTextEncoderStep final : public LeafBlock {
 public:
  static constexpr const char* kId = "sdxl.text_encoder";
  static constexpr const char* kDescription =
      "Encode prompt / prompt_2 (and negatives when the guider needs them) with SDXL's two CLIP encoders";
  static std::vector<InputParam> params() { return {}; }
  explicit SDXLTextEncoderStep(const ValueMap& = {}) {}
  BlockSpec spec() const override;
  void run(Components& components, BlockState& state) const override;
};

}  // namespace tessera
