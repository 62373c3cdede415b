#pragma once
/// Inputs, outputs and components of the Stable Diffusion 3 / 3.5 blocks (sd3.*), declared once. What SD3 shares
/// with SD/SDXL (prompt, negative_prompt, the embeddings, sizes, seed, latents, schedule) comes from
/// blocks/sd/sd_params.h; the flow scheduler setup from blocks/common/flow_match.h.
#include "tessera/spec.h"

namespace tessera::sd3 {

// ---- text
inline const InputParam prompt_2{"prompt_2", Kind::StringList,
                                 "Prompt for tokenizer_2 / text_encoder_2 (CLIP-G); default: prompt"};
inline const InputParam prompt_3{"prompt_3", Kind::StringList,
                                 "Prompt for tokenizer_3 / text_encoder_3 (T5); default: prompt"};
inline const InputParam negative_prompt_2{"negative_prompt_2", Kind::StringList,
                                          "Negative prompt for the second CLIP encoder; default: negative_prompt"};
inline const InputParam negative_prompt_3{"negative_prompt_3", Kind::StringList,
                                          "Negative prompt for the T5 encoder; default: negative_prompt"};
/// diffusers' StableDiffusion3Pipeline refuses more than 512 T5 tokens (check_inputs).
inline constexpr int64_t kMaxSequenceLimit = 512;
inline const InputParam max_sequence_length{
    "max_sequence_length", Kind::Int,
    "T5 tokens of the prompt (padded / truncated to it), at most 512 and the T5 tokenizer's model_max_length",
    false, Value(int64_t{256})};
inline const InputParam pooled_prompt_embeds_in{
    "pooled_prompt_embeds", Kind::Tensor,
    "Pooled text embeddings [B, P_L + P_G]; given with prompt_embeds, the text encoders are skipped"};
inline const InputParam negative_pooled_prompt_embeds_in{"negative_pooled_prompt_embeds", Kind::Tensor,
                                                         "Negative pooled text embeddings [B, P_L + P_G]"};
inline const OutputParam pooled_prompt_embeds{"pooled_prompt_embeds", Kind::Tensor,
                                              "Pooled text embeddings [B, P_L + P_G] (the two CLIP text_embeds)",
                                              "denoiser_input_fields"};
inline const OutputParam negative_pooled_prompt_embeds{
    "negative_pooled_prompt_embeds", Kind::Tensor,
    "Negative pooled text embeddings [B, P_L + P_G]; none when the guider needs no unconditional pass",
    "denoiser_input_fields"};
inline const OutputParam prompt_embeds{
    "prompt_embeds", Kind::Tensor,
    "Text embeddings [B, 77 + max_sequence_length, T5 width]: the CLIP states (padded or cropped to the T5 width), "
    "then the T5 states",
    "denoiser_input_fields"};
inline const OutputParam negative_prompt_embeds{
    "negative_prompt_embeds", Kind::Tensor,
    "Negative text embeddings, as prompt_embeds; none when the guider needs no unconditional pass",
    "denoiser_input_fields"};

// ---- loop
inline const InputParam latents{"latents", Kind::Tensor, "Latents [B, C, h, w] (unpacked)", true};
inline const OutputParam timestep_out{
    "timestep", Kind::Tensor,
    "The timestep tensor the transformer got in this step: t (sigma * 1000) expanded to each call's batch, the "
    "calls concatenated [N]"};

// ---- pipeline configs
inline const ConfigSpec batch_passes{"batch_passes", Value(true),
                                     "Run a step's guider passes as one batched transformer call (false: one call "
                                     "per pass)"};

// ---- components (diffusers' classes; the recipe may declare another type of the same category)
ComponentSpec tokenizer_3_component();
ComponentSpec text_encoder_3_component();
ComponentSpec transformer_component();
/// Classifier-free guidance at 7.0 (StableDiffusion3Pipeline's default), unless the recipe declares another guider.
ComponentSpec guider_component();

}  // namespace tessera::sd3
