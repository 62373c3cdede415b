#include "blocks/sdxl/register.h"

#include "blocks/register.h"
#include "blocks/sdxl/before_denoise.h"
#include "blocks/sdxl/encoders.h"

namespace tessera {

void register_sdxl_blocks(Registry& r) {
  add_block_class<SDXLTextEncoderStep>(r);
  add_block_class<SDXLPrepareAdditionalConditioningStep>(r);
}

}  // namespace tessera
