#pragma once
/// Stable Diffusion 1.x/2.x encoder blocks: prompts → CLIP embeddings; the input step (batch expansion);
/// the image → VAE latents step of image2image.
#include "tessera/block.h"

namespace tessera {

/// sd.text_encoder — diffusers' StableDiffusionPipeline.encode_prompt. The prompt is tokenized to
/// model_max_length and encoded; `clip_skip` takes hidden_states[-(clip_skip+1)] through the final layer norm.
/// Negative embeddings (negative_prompt, "" by default) are made only when the guider needs an unconditional
/// pass, without clip_skip, exactly as diffusers' StableDiffusionPipeline does. Given `prompt_embeds` the text
/// encoder is skipped (and not loaded).
///
///   - {name: text_encoder, block: sd.text_encoder}   # inputs: prompt: "a cat"
class SDTextEncoderStep final : public LeafBlock {
 public:
  static constexpr const char* kId = "sd.text_encoder";
  static constexpr const char* kDescription =
      "Encode prompt / negative_prompt with the CLIP text encoder (negatives only when the guider needs them)";
  static std::vector<InputParam> params() { return {}; }
  explicit SDTextEncoderStep(const ValueMap& = {}) {}
  BlockSpec spec() const override;
  void run(Components& components, BlockState& state) const override;
};

/// sd.input — diffusers' input step: batch_size from the embeddings, embeddings repeated
/// num_images_per_prompt times (each prompt's copies adjacent), shapes checked against each other.
class SDInputStep final : public LeafBlock {
 public:
  static constexpr const char* kId = "sd.input";
  static constexpr const char* kDescription =
      "Batch size from prompt_embeds; repeat every embedding num_images_per_prompt times";
  static std::vector<InputParam> params() { return {}; }
  explicit SDInputStep(const ValueMap& = {}) {}
  BlockSpec spec() const override;
  void run(Components& components, BlockState& state) const override;
};

/// sd.vae_encode — image2image's image → latents: the image is resized to height × width (default: its own size
/// rounded down to the VAE factor), mapped to [-1, 1], encoded and sampled with the run's generator (the first
/// draw of an image2image run, as in diffusers), × scaling_factor. Outputs height/width for later steps.
class SDVaeEncodeStep final : public LeafBlock {
 public:
  static constexpr const char* kId = "sd.vae_encode";
  static constexpr const char* kDescription =
      "Preprocess `image` (resize, [-1, 1]) and encode it with the VAE into image_latents (sampled, scaled)";
  static std::vector<InputParam> params() { return {}; }
  explicit SDVaeEncodeStep(const ValueMap& = {}) {}
  BlockSpec spec() const override;
  void run(Components& components, BlockState& state) const override;
};

}  // namespace tessera
