#pragma once
/// The registry every CLI command starts from: built-ins of every folder, plus plugins.
#include "engine/plugin.h"
#include "engine/registry.h"

namespace tessera::cli {

/// Registers the engine's and every folder's built-ins, in a fixed order.
void register_all_builtins(Registry& registry);

}  // namespace tessera::cli
