#include <tessera/builtins.h>

#include "blocks/register.h"
#include "tessera/registry.h"
#include "guiders/register.h"
#include "models/register.h"
#include "schedulers/register.h"

namespace tessera {

void register_builtins(Registry& registry) {
  register_builtin_blocks(registry);
  register_builtin_schedulers(registry);
  register_builtin_guiders(registry);
  register_builtin_models(registry);
}

}  // namespace tessera
