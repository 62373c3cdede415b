#pragma once
/// Component cases of UNet2DConditionModel (tiny_sd_unet, tiny_sdxl_unet) for the parity runner.
#include "tools/parity/parity.h"

namespace tessera {

/// Loads `models_dir/params.model/params.subfolder` and compares the forward outputs with the goldens:
/// tiny_sd_unet: scalar timestep (params.timestep_scalar) → out_scalar_timestep, timestep_per_batch →
/// out_per_batch_timestep; tiny_sdxl_unet: params.timestep with text_embeds / time_ids → out.
ParityResult run_unet_case(const ParityCase& c);

/// register_component_case_runner("UNet2DConditionModel", run_unet_case).
void register_unet_case_runner();

}  // namespace tessera
