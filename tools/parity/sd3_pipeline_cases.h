#pragma once
/// The SD3 / SD3.5 "pipeline" cases (sd3_*: StableDiffusion3Pipeline, StableDiffusion3Img2ImgPipeline and modular
/// StableDiffusion3AutoBlocks calls, models tiny-sd3 and tiny-sd35) replayed through recipes/sd3/auto.yaml.
/// Compared: images (NHWC), the latents after every step, the joint and pooled prompt embeddings and their
/// negatives, the full schedule (timesteps, sigmas), the timestep tensors the transformer got, the first latents
/// (drawn or noised), the image latents of image2image; the modular case's images_without_negative_prompt against
/// a run without guidance (what diffusers' modular SD3 computes without a negative prompt).
namespace tessera {

void register_sd3_pipeline_case_runner();

}  // namespace tessera
