#include "blocks/sd/register.h"

#include "blocks/register.h"
#include "blocks/sd/before_denoise.h"
#include "blocks/sd/controlnet.h"
#include "blocks/sd/decoders.h"
#include "blocks/sd/denoise.h"
#include "blocks/sd/encoders.h"
#include "blocks/sd/ip_adapter.h"

namespace tessera {

void register_sd_blocks(Registry& r) {
  add_block_class<SDTextEncoderStep>(r);
  add_block_class<SDInputStep>(r);
  add_block_class<SDVaeEncodeStep>(r);
  add_block_class<SDSetTimestepsStep>(r);
  add_block_class<SDImg2ImgSetTimestepsStep>(r);
  add_block_class<SDPrepareLatentsStep>(r);
  add_block_class<SDImg2ImgPrepareLatentsStep>(r);
  add_block_class<SDInpaintPrepareLatentsStep>(r);
  add_block_class<SDLoopBeforeDenoiserStep>(r);
  add_block_class<SDLoopDenoiserStep>(r);
  add_block_class<SDPrepareControlImageStep>(r);
  add_block_class<SDLoopControlNetDenoiserStep>(r);
  add_block_class<SDPrepareIPAdapterStep>(r);
  add_block_class<SDLoopSchedulerStep>(r);
  add_block_class<SDLoopInpaintBlendStep>(r);
  add_block_class<SDDecodeStep>(r);
}

}  // namespace tessera
