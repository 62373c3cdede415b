#pragma once
/// Component cases of AutoencoderKL (tiny_sd_vae, tiny_sdxl_vae) for the parity runner.
#include "tools/parity/parity.h"

namespace tessera {

/// Loads `models_dir/params.model/params.subfolder` and compares encode(image).latent_dist's mean, std (and
/// logvar when the case has it) and decode(latents) (latents raw, not divided by scaling_factor) with the
/// goldens; also checks config.scaling_factor against params.scaling_factor when given.
ParityResult run_vae_case(const ParityCase& c);

/// register_component_case_runner("AutoencoderKL", run_vae_case).
void register_vae_case_runner();

}  // namespace tessera
