#include "blocks/sd3/register.h"

#include "blocks/register.h"
#include "blocks/sd3/before_denoise.h"
#include "blocks/sd3/decoders.h"
#include "blocks/sd3/denoise.h"
#include "blocks/sd3/encoders.h"

namespace tessera {

void register_sd3_blocks(Registry& r) {
  add_block_class<SD3TextEncoderStep>(r);
  add_block_class<SD3VaeEncodeStep>(r);
  add_block_class<SD3SetTimestepsStep>(r);
  add_block_class<SD3Img2ImgSetTimestepsStep>(r);
  add_block_class<SD3PrepareLatentsStep>(r);
  add_block_class<SD3Img2ImgPrepareLatentsStep>(r);
  add_block_class<SD3LoopDenoiserStep>(r);
  add_block_class<SD3DecodeStep>(r);
}

}  // namespace tessera
