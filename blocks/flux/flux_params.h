#pragma once
/// Inputs, outputs and components the FLUX.1 blocks share (schnell and dev), declared once. Names and meanings
/// follow diffusers' FluxPipeline / FluxImg2ImgPipeline; what FLUX shares with SD (prompts, sizes, seed, the loop's
/// t and i) is reused from blocks/sd/sd_params.h.
#include "blocks/sd/sd_params.h"

namespace tessera::flux {

// ---- text
inline const InputParam prompt_2{"prompt_2", Kind::StringList, "Prompt for the T5 encoder (default: prompt)"};
inline const InputParam negative_prompt_2{"negative_prompt_2", Kind::StringList,
                                          "Negative prompt for the T5 encoder (default: negative_prompt)"};
inline const InputParam max_sequence_length{
    "max_sequence_length", Kind::Int, "T5 tokens of the prompt (padded and truncated to it; at most 512)", false,
    Value(int64_t{512})};
inline const InputParam true_cfg_scale{
    "true_cfg_scale", Kind::Float,
    "True classifier-free guidance with negative_prompt (FluxPipeline's true_cfg_scale): overrides the guider's "
    "guidance_scale; > 1 needs a negative prompt. Absent: the guider's config (1 = off)"};
inline const InputParam guidance_scale{
    "guidance_scale", Kind::Float,
    "Embedded (distilled) guidance of guidance-distilled models such as FLUX.1-dev; ignored by models without a "
    "guidance embedder (schnell). Not classifier-free guidance: see true_cfg_scale",
    false, Value(3.5)};
inline const OutputParam prompt_embeds_out{"prompt_embeds", Kind::Tensor,
                                           "T5 text embeddings [B, max_sequence_length, J]", "denoiser_input_fields"};
inline const OutputParam negative_prompt_embeds_out{
    "negative_prompt_embeds", Kind::Tensor,
    "Negative T5 text embeddings [B, max_sequence_length, J]; none without true CFG", "denoiser_input_fields"};
inline const OutputParam pooled_prompt_embeds_out{"pooled_prompt_embeds", Kind::Tensor,
                                                  "CLIP pooled text embedding [B, P]", "denoiser_input_fields"};
inline const OutputParam negative_pooled_prompt_embeds_out{
    "negative_pooled_prompt_embeds", Kind::Tensor, "Negative CLIP pooled text embedding [B, P]; none without true CFG",
    "denoiser_input_fields"};
inline const OutputParam text_ids_out{"text_ids", Kind::Tensor, "Position ids of the text tokens [S_txt, 3] (zeros)"};
inline const InputParam text_ids{"text_ids", Kind::Tensor, "Position ids of the text tokens [S_txt, 3]", true};

// ---- latents
inline const OutputParam latent_image_ids_out{"latent_image_ids", Kind::Tensor,
                                              "Position ids of the image tokens [S_img, 3]: (0, row, col)"};
inline const InputParam latent_image_ids{"latent_image_ids", Kind::Tensor,
                                         "Position ids of the image tokens [S_img, 3]: (0, row, col)", true};
inline const InputParam packed_latents{"latents", Kind::Tensor, "Packed latents [B, (h/2)(w/2), 4C]", true};
inline const OutputParam packed_latents_out{"latents", Kind::Tensor, "Packed latents [B, (h/2)(w/2), 4C]"};
inline const InputParam latents_in{
    "latents", Kind::Tensor,
    "Pre-generated packed latents [B, (h/2)(w/2), 4C] (as FluxPipeline takes them); absent: drawn from the seed"};
inline const OutputParam image_latents_out{
    "image_latents", Kind::Tensor, "VAE latents of the input image, (z - shift_factor) * scaling_factor [B, C, h, w]"};
inline const InputParam image_latents{
    "image_latents", Kind::Tensor, "VAE latents of the input image, (z - shift_factor) * scaling_factor [B, C, h, w]",
    true};
inline const OutputParam noise_out{"noise", Kind::Tensor, "The noise the initial latents were made from [B, C, h, w]"};
inline const OutputParam transformer_timestep_out{
    "timestep", Kind::Tensor, "The timestep the transformer got at this step, t / 1000 per row of its batch"};
inline const OutputParam transformer_guidance_out{
    "guidance", Kind::Tensor, "The embedded guidance the transformer got at this step per row (none without it)"};
/// The FLUX image processor rounds to vae_scale_factor × 2 (the 2×2 packing).
inline const InputParam height{"height", Kind::Int,
                               "Image height in pixels, a multiple of 16 for FLUX.1 (default 1024)"};
inline const InputParam width{"width", Kind::Int, "Image width in pixels, a multiple of 16 for FLUX.1 (default 1024)"};

// ---- components
ComponentSpec transformer_component();
ComponentSpec t5_tokenizer_component(const std::string& name = "tokenizer_2");
ComponentSpec t5_encoder_component(const std::string& name = "text_encoder_2");
/// Classifier-free guidance at scale 1 (off): FLUX.1 is guidance-distilled; true_cfg_scale turns it on.
ComponentSpec guider_component();

}  // namespace tessera::flux
