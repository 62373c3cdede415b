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
  r.add_selector({"has_mask_and_image",
                  "'inpaint' when image and mask_image are present, 'image2image' with only image, else 'text2image'",
                  {"image", "mask_image"}, [](const PipelineState& s) -> std::string {
                    if (s.has("image") && s.has("mask_image")) return "inpaint";
                    if (s.has("image")) return "image2image";
                    return "text2image";
                  }});
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
