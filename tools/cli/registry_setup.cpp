#include "tools/cli/registry_setup.h"

#include "blocks/register.h"
#include "guiders/register.h"
#include "models/register.h"
#include "schedulers/register.h"

namespace tessera::cli {

void register_all_builtins(Registry& registry) {
  register_builtin_engine(registry);
  register_builtin_blocks(registry);
  register_builtin_schedulers(registry);
  register_builtin_guiders(registry);
  register_builtin_models(registry);
}

}  // namespace tessera::cli
