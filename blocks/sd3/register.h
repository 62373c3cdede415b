#pragma once
/// sd3.*: Stable Diffusion 3 / 3.5 blocks (CLIP-L + CLIP-G + T5 prompts, flow-matching schedule, SD3 transformer).
/// The loop's scheduler step and the input step are sd.loop_scheduler_step and sd.input.
#include "tessera/registry.h"

namespace tessera {

void register_sd3_blocks(Registry& r);

}  // namespace tessera
