#pragma once
/// The FLUX.1 "pipeline" cases (flux_*: FluxPipeline, FluxImg2ImgPipeline and modular FluxAutoBlocks calls)
/// replayed through recipes/flux/auto.yaml. Compared: images (NHWC), the packed latents after every step, the
/// prompt embeddings and ids, the full schedule (timesteps, sigmas), the exact timestep and guidance tensors the
/// transformer got, the image latents and first transformer input of image2image, the final latents unpacked.
namespace tessera {

void register_flux_pipeline_case_runner();

}  // namespace tessera
