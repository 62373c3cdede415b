#include "blocks/flux/register.h"

#include "blocks/flux/before_denoise.h"
#include "blocks/flux/decoders.h"
#include "blocks/flux/denoise.h"
#include "blocks/flux/encoders.h"
#include "blocks/register.h"

namespace tessera {

void register_flux_blocks(Registry& r) {
  add_block_class<FluxTextEncoderStep>(r);
  add_block_class<FluxVaeEncodeStep>(r);
  add_block_class<FluxSetTimestepsStep>(r);
  add_block_class<FluxImg2ImgSetTimestepsStep>(r);
  add_block_class<FluxPrepareLatentsStep>(r);
  add_block_class<FluxImg2ImgPrepareLatentsStep>(r);
  add_block_class<FluxLoopDenoiserStep>(r);
  add_block_class<FluxDecodeStep>(r);
}

}  // namespace tessera
