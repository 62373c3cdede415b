#include "blocks/register.h"

#include "blocks/common/register.h"
#include "blocks/flux/register.h"
#include "blocks/sd/register.h"
#include "blocks/sd3/register.h"
#include "blocks/sdxl/register.h"

namespace tessera {

void register_builtin_blocks(Registry& r) {
  register_common_blocks(r);
  register_flux_blocks(r);
  register_sd_blocks(r);
  register_sdxl_blocks(r);
  register_sd3_blocks(r);
}

}  // namespace tessera
