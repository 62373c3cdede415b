#pragma once
/// What the flow-matching families (FLUX, SD3/3.5) share between their blocks: the resolution-dependent shift
/// (`calculate_shift` → `mu`), setting the flow scheduler up the way their pipelines do (and again after a
/// checkpoint load), and the VAE's shifted latent space `(z - shift_factor) * scaling_factor`.
///
///   flow::set_timesteps(scheduler, {n, 0, image_seq_len, /*flux_sigmas=*/true}, path);   // FLUX
///   at::Tensor z = flow::encode_image(*vae, image, gen);     // [B, C, h, w] in the transformer's space
///   at::Tensor x = vae->decode(flow::from_vae_latents(z, *vae));
#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

#include "tessera/spec.h"
#include "tessera/state.h"

namespace tessera {
class Scheduler;
class FlowMatchEulerDiscreteScheduler;
class AutoencoderKLImpl;
}  // namespace tessera

namespace tessera::flow {

/// diffusers' calculate_shift: mu interpolated linearly in the image sequence length between
/// (base_seq_len, base_shift) and (max_seq_len, max_shift).
double calculate_shift(int64_t image_seq_len, int64_t base_seq_len, int64_t max_seq_len, double base_shift,
                       double max_shift);

/// The pipeline's flow-matching scheduler, or InputError naming the class found (FLUX and SD3 sample with
/// FlowMatchEulerDiscreteScheduler; other flow schedulers are not ported yet).
FlowMatchEulerDiscreteScheduler& flow_scheduler(Scheduler& scheduler, const std::string& block_path);

/// How a flow pipeline set its scheduler up, kept in the state as `scheduler_setup`
/// [num_inference_steps, begin_index, image_seq_len, flux_sigmas] so a run resumed from a checkpoint can set a
/// fresh scheduler up identically.
struct FlowSetup {
  int64_t num_inference_steps = 0;
  int64_t begin_index = 0;
  int64_t image_seq_len = 0;
  bool flux_sigmas = false;  ///< FLUX passes sigmas = linspace(1, 1/n, n); SD3 uses the scheduler's own
  std::vector<int64_t> to_list() const;
};

inline const OutputParam scheduler_setup_out{
    "scheduler_setup", Kind::IntList,
    "[num_inference_steps, begin_index, image_seq_len, flux_sigmas] the flow scheduler was set up with (restores "
    "it after a checkpoint load)"};
inline const InputParam scheduler_setup{
    "scheduler_setup", Kind::IntList,
    "[num_inference_steps, begin_index, image_seq_len, flux_sigmas] the flow scheduler was set up with (restores "
    "it after a checkpoint load)"};

/// scheduler.set_timesteps as FluxPipeline / StableDiffusion3Pipeline call it: custom sigmas linspace(1, 1/n, n)
/// when `flux_sigmas`, and `mu = calculate_shift(image_seq_len, …)` from the scheduler's config when it uses
/// dynamic shifting. Scheduler errors become InputErrors at `block_path`.
void set_timesteps(Scheduler& scheduler, const FlowSetup& setup, const std::string& block_path);

/// Sets the scheduler up again from the state's `scheduler_setup` when it is not (no-op otherwise).
void ensure_scheduler(Scheduler& scheduler, const BlockState& s);

/// VAE latent sample → the transformer's space: (z - shift_factor) * scaling_factor; and back.
at::Tensor to_vae_latents(const at::Tensor& transformer_latents, const AutoencoderKLImpl& vae);
at::Tensor from_vae_latents(const at::Tensor& vae_latents, const AutoencoderKLImpl& vae);

/// image [B, 3, H, W] in [-1, 1] → (latent_dist.sample(gen) - shift_factor) * scaling_factor, as the FLUX and SD3
/// img2img pipelines' `_encode_vae_image` (one draw of the latent's shape from `gen`).
at::Tensor encode_image(AutoencoderKLImpl& vae, const at::Tensor& image, at::Generator& gen);

}  // namespace tessera::flow
