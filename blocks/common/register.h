#pragma once
/// common.*: model-free blocks (noise, step schedules, smoothing, latents → images).
#include "tessera/registry.h"

namespace tessera {

/// Registers common.prepare_noise, common.set_steps, common.diffuse_step and common.to_image.
void register_common_blocks(Registry& r);

}  // namespace tessera
