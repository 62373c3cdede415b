#pragma once
/// Inputs, outputs and components the Stable Diffusion blocks share (SD 1.x/2.x and SDXL), declared once so
/// that every block that reads `prompt_embeds` declares it the same way. Names and meanings follow diffusers.
#include "tessera/spec.h"

namespace tessera::sd {

// ---- text
inline const InputParam prompt = InputParam::from_template("prompt");
inline const InputParam negative_prompt = InputParam::from_template("negative_prompt");
inline const InputParam clip_skip = InputParam::from_template("clip_skip");
inline const InputParam guidance_scale{
    "guidance_scale", Kind::Float,
    "Guidance scale; given, it overrides the guider's configured guidance_scale (absent: the guider's config). "
    "<= 1 turns classifier-free guidance off, as diffusers' standard pipelines do"};
inline const InputParam guidance_rescale{
    "guidance_rescale", Kind::Float,
    "Rescale of the guided prediction towards the conditional one's std (Lin et al. 2023); given, it overrides the "
    "guider's configured guidance_rescale"};
inline const InputParam prompt_embeds_in = InputParam::from_template("prompt_embeds");
inline const InputParam negative_prompt_embeds_in = InputParam::from_template("negative_prompt_embeds");
inline const InputParam pooled_prompt_embeds_in = InputParam::from_template("pooled_prompt_embeds");
inline const InputParam negative_pooled_prompt_embeds_in = InputParam::from_template("negative_pooled_prompt_embeds");
inline const OutputParam prompt_embeds{"prompt_embeds", Kind::Tensor, "Text embeddings [B, 77, D]",
                                       "denoiser_input_fields"};
inline const OutputParam negative_prompt_embeds{
    "negative_prompt_embeds", Kind::Tensor,
    "Negative text embeddings [B, 77, D]; none when the guider needs no unconditional pass", "denoiser_input_fields"};
inline const OutputParam pooled_prompt_embeds{"pooled_prompt_embeds", Kind::Tensor,
                                              "Pooled text embeddings [B, P] (SDXL)", "denoiser_input_fields"};
inline const OutputParam negative_pooled_prompt_embeds{"negative_pooled_prompt_embeds", Kind::Tensor,
                                                       "Negative pooled text embeddings [B, P] (SDXL)",
                                                       "denoiser_input_fields"};

// ---- IP-Adapter (sd.prepare_ip_adapter → the denoisers)
inline const InputParam ip_adapter_tokens{
    "ip_adapter_tokens", Kind::Tensor,
    "IP-Adapter image tokens [B, n, T, C] (sd.prepare_ip_adapter): extra keys/values of every cross-attention layer"};
inline const InputParam negative_ip_adapter_tokens{
    "negative_ip_adapter_tokens", Kind::Tensor,
    "IP-Adapter tokens of the unconditional passes [B, n, T, C] (of zero embeddings, or of a zero image for Plus)"};

// ---- batch, size, randomness
inline const InputParam num_images_per_prompt = InputParam::from_template("num_images_per_prompt");
inline const InputParam batch_size{"batch_size", Kind::Int, "Number of prompts B (set by the input step)", true};
inline const OutputParam batch_size_out{"batch_size", Kind::Int, "Number of prompts B"};
inline const InputParam height = InputParam::from_template("height");
inline const InputParam width = InputParam::from_template("width");
inline const OutputParam height_out{"height", Kind::Int, "Image height in pixels"};
inline const OutputParam width_out{"width", Kind::Int, "Image width in pixels"};
inline const InputParam seed = InputParam::from_template("seed");
inline const InputParam generator = InputParam::from_template("generator");
inline const OutputParam generator_out{
    "generator", Kind::Generator,
    "The CPU generator every later random draw continues from (diffusers passes one generator through)"};

// ---- schedule
inline const InputParam num_inference_steps = InputParam::from_template("num_inference_steps");
inline const OutputParam num_inference_steps_out{"num_inference_steps", Kind::Int, "Denoising steps actually run"};
inline const InputParam timesteps{"timesteps", Kind::Tensor, "Timesteps of the denoising loop", true};
inline const OutputParam timesteps_out{"timesteps", Kind::Tensor, "Timesteps of the denoising loop"};
inline const InputParam strength{"strength", Kind::Float,
                                 "How much to transform the input image, in (0, 1]: the last int(n*strength) of n "
                                 "steps run (× the scheduler's order); absent: the workflow's default (diffusers': "
                                 "SD image2image 0.8, SD inpainting 1.0, SDXL image2image 0.3, SDXL inpainting 0.9999)"};
inline const OutputParam strength_out{"strength", Kind::Float, "The strength this run uses (the workflow's default "
                                                               "when none was given)"};
inline const InputParam latent_timestep{"latent_timestep", Kind::Tensor,
                                        "First kept timestep [B]: the noise level of the initial latents", true};
inline const OutputParam latent_timestep_out{"latent_timestep", Kind::Tensor,
                                             "First kept timestep [B]: the noise level of the initial latents"};
inline const InputParam eta = InputParam::from_template("eta");
inline const OutputParam scheduler_setup_out{
    "scheduler_setup", Kind::IntList,
    "[num_inference_steps, begin_index] the scheduler was set up with (restores it after a checkpoint load)"};
inline const InputParam scheduler_setup{
    "scheduler_setup", Kind::IntList,
    "[num_inference_steps, begin_index] the scheduler was set up with (restores it after a checkpoint load); "
    "flow-matching families add image_seq_len and flux_sigmas"};

// ---- latents and images
inline const InputParam latents_in = InputParam::from_template("latents");
inline const InputParam latents{"latents", Kind::Tensor, "Latents [B, C, h, w]", true};
inline const OutputParam latents_out{"latents", Kind::Tensor, "Latents [B, C, h, w]"};
inline const InputParam image = InputParam::from_template("image");
inline const InputParam mask_image = InputParam::from_template("mask_image");
inline const InputParam image_latents{"image_latents", Kind::Tensor,
                                      "VAE latents of the input image, scaled by scaling_factor [B, C, h, w]", true};
inline const InputParam image_latents_opt{"image_latents", Kind::Tensor,
                                          "VAE latents of the input image, scaled by scaling_factor [B, C, h, w]"};
inline const OutputParam image_latents_out{"image_latents", Kind::Tensor,
                                           "VAE latents of the input image, scaled by scaling_factor [B, C, h, w]"};
inline const OutputParam noise_out{"noise", Kind::Tensor, "The noise the initial latents were made from [B, C, h, w]"};
inline const InputParam noise{"noise", Kind::Tensor, "The noise the initial latents were made from [B, C, h, w]", true};
inline const OutputParam mask_out{"mask", Kind::Tensor, "Inpainting mask at latent resolution [B, 1, h, w], 1 = repaint"};
inline const InputParam mask{"mask", Kind::Tensor, "Inpainting mask at latent resolution [B, 1, h, w], 1 = repaint",
                             true};
inline const OutputParam masked_image_latents_out{"masked_image_latents", Kind::Tensor,
                                                  "Latents of the image with the masked area blanked [B, C, h, w]"};
inline const InputParam masked_image_latents{"masked_image_latents", Kind::Tensor,
                                             "Latents of the image with the masked area blanked [B, C, h, w]"};
inline const InputParam output_type = InputParam::from_template("output_type");
inline const OutputParam images_out = OutputParam::from_template("images");

// ---- loop
inline const InputParam i{"i", Kind::Int, "Index of the denoising step", true};
inline const InputParam t{"t", Kind::Tensor, "Timestep of the denoising step (0-d, the scheduler's dtype)", true};
inline const InputParam latent_model_input{"latent_model_input", Kind::Tensor,
                                           "Scaled UNet input of this step [B, C', h, w]", true};
inline const OutputParam latent_model_input_out{"latent_model_input", Kind::Tensor,
                                                "Scaled UNet input of this step [B, C', h, w]"};
inline const InputParam noise_pred{"noise_pred", Kind::Tensor, "Guided model output of this step [B, C, h, w]", true};
inline const OutputParam noise_pred_out{"noise_pred", Kind::Tensor, "Guided model output of this step [B, C, h, w]"};

// ---- SDXL micro-conditioning
inline const InputParam add_time_ids{"add_time_ids", Kind::Tensor, "SDXL time ids [B, 6]"};
inline const InputParam negative_add_time_ids{"negative_add_time_ids", Kind::Tensor, "SDXL negative time ids [B, 6]"};
inline const OutputParam add_time_ids_out{"add_time_ids", Kind::Tensor,
                                          "SDXL time ids [B, 6]: original size, crop top-left, target size",
                                          "denoiser_input_fields"};
inline const OutputParam negative_add_time_ids_out{"negative_add_time_ids", Kind::Tensor,
                                                   "SDXL negative time ids [B, 6]", "denoiser_input_fields"};

// ---- pipeline configs
/// diffusers' enable_vae_tiling: encode/decode large images tile by tile (bounded memory, blended seams).
inline const ConfigSpec vae_tiling{"vae_tiling", Value(false),
                                   "Encode and decode with the VAE tile by tile (large images, bounded memory)"};

// ---- components (types as diffusers names them; a recipe may declare another type of the same category)
ComponentSpec tokenizer_component(const std::string& name = "tokenizer");
ComponentSpec text_encoder_component(const std::string& name = "text_encoder",
                                     const std::string& type = "CLIPTextModel");
ComponentSpec unet_component();
ComponentSpec vae_component();
ComponentSpec scheduler_component();
/// Classifier-free guidance at 7.5, created from config unless the recipe declares another guider.
ComponentSpec guider_component();

}  // namespace tessera::sd
