#pragma once
/// sdxl.*: the SDXL-specific blocks (two text encoders, micro-conditioning); the other stages are sd.* blocks.
#include "tessera/registry.h"

namespace tessera {

void register_sdxl_blocks(Registry& r);

}  // namespace tessera
