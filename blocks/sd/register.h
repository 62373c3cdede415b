#pragma once
/// sd.*: Stable Diffusion 1.x/2.x blocks (also the stages SDXL shares: schedule, latents, loop, decode).
#include "tessera/registry.h"

namespace tessera {

void register_sd_blocks(Registry& r);

}  // namespace tessera
