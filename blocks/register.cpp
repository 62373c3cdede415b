#include "blocks/register.h"

#include "blocks/common/register.h"

namespace tessera {

void register_builtin_blocks(Registry& r) { register_common_blocks(r); }

}  // namespace tessera
