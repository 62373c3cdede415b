#pragma once
/// Stable Diffusion 3 / 3.5 encoder blocks: prompts → CLIP-L + CLIP-G + T5 embeddings; the image → VAE latents
/// step of image2image.
#include "tessera/block.h"

namespace tessera {

/// sd3.text_encoder — StableDiffusion3Pipeline.encode_prompt. For each CLIP encoder (tokenizer/text_encoder with
/// prompt, tokenizer_2/text_encoder_2 with prompt_2, default prompt; 77 tokens) the penultimate hidden states
/// (hidden_states[-(clip_skip + 2)] with clip_skip) and the pooled text_embeds; the T5 encoder (tokenizer_3 /
/// text_encoder_3 with prompt_3, default prompt) at max_sequence_length tokens, called without attention mask.
/// clip = cat(L, G, -1) zero-padded to the T5 width, or cropped to it when wider (F.pad with a negative amount);
/// prompt_embeds = cat([clip, t5], -2) [B, 77 + msl, T5 width], pooled_prompt_embeds = cat(pooled_L, pooled_G).
/// Negatives (negative_prompt, "" by default; _2 and _3 default to it; no clip_skip) only when the guider needs an
/// unconditional pass. Given prompt_embeds (with pooled_prompt_embeds) the encoders are skipped.
///
///   - {name: text_encoder, block: sd3.text_encoder}   # inputs: prompt: "a cat", max_sequence_length: 256
class SD3TextEncoderStep final : public LeafBlock {
 public:
  static constexpr const char* kId = "sd3.text_encoder";
  static constexpr const char* kDescription =
      "Encode the prompts with CLIP-L, CLIP-G and T5 into SD3's joint text embeddings and pooled embeddings "
      "(negatives only when the guider needs them)";
  static std::vector<InputParam> params() { return {}; }
  explicit SD3TextEncoderStep(const ValueMap& = {}) {}
  BlockSpec spec() const override;
  void run(Components& components, BlockState& state) const override;
};

/// sd3.vae_encode — image2image's image → latents, as StableDiffusion3Img2ImgPipeline: the image is resized to
/// height × width (each defaulting to transformer.sample_size × the VAE factor, as diffusers: not the image's own
/// size), mapped to [-1, 1], encoded and sampled with the run's generator (the first draw of the run),
/// then (z - shift_factor) · scaling_factor. Outputs height/width for later steps.
class SD3VaeEncodeStep final : public LeafBlock {
 public:
  static constexpr const char* kId = "sd3.vae_encode";
  static constexpr const char* kDescription =
      "Preprocess `image` (resize, [-1, 1]) and encode it with the VAE into image_latents ((sample - shift) * scale)";
  static std::vector<InputParam> params() { return {}; }
  explicit SD3VaeEncodeStep(const ValueMap& = {}) {}
  BlockSpec spec() const override;
  void run(Components& components, BlockState& state) const override;
};

}  // namespace tessera
