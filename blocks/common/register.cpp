#include "blocks/common/register.h"

#include "blocks/common/before_denoise.h"
#include "blocks/common/decoders.h"
#include "blocks/common/denoise.h"
#include "blocks/register.h"

namespace tessera {

void register_common_blocks(Registry& r) {
  add_block_class<PrepareNoiseStep>(r);
  add_block_class<SetStepsStep>(r);
  add_block_class<DiffuseStep>(r);
  add_block_class<ToImageStep>(r);
}

}  // namespace tessera
