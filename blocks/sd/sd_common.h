#pragma once
/// Helpers the Stable Diffusion blocks share: prompt lists, the run's generator, sizes, batch expansion.
#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "tessera/state.h"

namespace tessera {
class Scheduler;
class AutoencoderKLImpl;
class Components;
class Guider;
struct UNet2DConditionModelConfig;
}  // namespace tessera

namespace tessera::sd {

/// A prompt input as a list: a single string is one prompt. Absent → `fallback`.
std::vector<std::string> prompt_list(const BlockState& s, const std::string& name,
                                     const std::vector<std::string>& fallback = {});

/// The generator of this run: the `generator` in the state when present (a caller's, or the one an earlier block
/// made; it wins over `seed`), else one seeded with `seed` (as
/// torch.Generator().manual_seed), else a random seed that is logged and written back as `seed`. The block
/// must declare inputs seed and generator and output generator; the generator is written to the output so that
/// every later draw continues the same stream, as diffusers passes one generator through a pipeline.
at::Generator run_generator(BlockState& s);

/// diffusers' randn_tensor on the CPU generator: float32 standard normal of `shape`.
at::Tensor randn(at::IntArrayRef shape, at::Generator& gen);

/// The checked batch-size multiplier: batch_size * num_images_per_prompt.
int64_t total_batch(const BlockState& s);

/// Repeats each row of a [B, …] tensor `n` times (row-wise: a0 a0 a1 a1), as diffusers' repeat/view idiom does.
at::Tensor repeat_rows(const at::Tensor& x, int64_t n);

/// Expands image latents [b, …] to `batch` rows by tiling (b divides batch), as diffusers' prepare_latents; InputError when
/// the image count does not divide the batch.
at::Tensor expand_to_batch(const at::Tensor& x, int64_t batch, const std::string& what, const std::string& block_path);

/// 2^(levels-1) for the VAE (8 for SD, 2 for the tiny test models).
int64_t vae_scale_factor(const AutoencoderKLImpl& vae);

/// "name 'path'" of a component for messages (its `from` when it has one), or just the name.
std::string component_where(const Components& c, const std::string& name);

/// "SDXL", "SD 1.x", "SD 2.x" or "cross-attention width N": what a UNet-style config (UNet, ControlNet) is for.
std::string unet_family(const UNet2DConditionModelConfig& config);

/// Checks height and width are positive multiples of the VAE scale factor (InputError naming both otherwise).
void check_image_size(int64_t height, int64_t width, int64_t factor, const std::string& block_path);

/// Applies the `guidance_scale` (and, when the block declares it, `guidance_rescale`) inputs to the guider; absent
/// inputs restore the guider's configured values.
void apply_guidance_scale(Guider& guider, const BlockState& s);

/// Whether the guider will need unconditional embeddings (diffusers' requires_unconditional_embeds).
bool needs_unconditional(const Guider& guider);

/// Sets the scheduler up again from the state's `scheduler_setup` when it is not (a run resumed from a checkpoint
/// after set_timesteps: the checkpoint holds the state, not the scheduler's internals). Single-step schedulers
/// then continue exactly; multistep ones restart their history. No-op when the scheduler is already set up.
/// A 4-value setup comes from a flow-matching block (FLUX, SD3) and is restored by flow::ensure_scheduler, so
/// the SD loop steps also run those families' loops.
void ensure_scheduler(Scheduler& scheduler, const BlockState& s);

/// Switches the VAE's tiling to the pipeline config `vae_tiling` (the block must declare sd::vae_tiling).
void apply_vae_tiling(Components& c, AutoencoderKLImpl& vae);

/// Scales VAE latents into the UNet's space and back (× / ÷ scaling_factor, as the SD and SDXL pipelines).
at::Tensor to_vae_latents(const at::Tensor& unet_latents, const AutoencoderKLImpl& vae);
at::Tensor from_vae_latents(const at::Tensor& vae_latents, const AutoencoderKLImpl& vae);

/// image [B, 3, H, W] in [-1, 1] → VAE latent sample (mean + std * noise from `gen`) × scaling_factor, as
/// diffusers' `retrieve_latents(vae.encode(image), generator) * scaling_factor`.
at::Tensor encode_image(AutoencoderKLImpl& vae, const at::Tensor& image, at::Generator& gen);

}  // namespace tessera::sd
