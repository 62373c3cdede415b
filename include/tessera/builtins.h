#pragma once
/// Tessera's built-in blocks, schedulers, guiders, models and selectors, registered in one call.
///
///   #include <tessera/builtins.h>
///   tessera::Registry registry;
///   tessera::register_builtins(registry);   // every type a shipped recipe names
///   auto pipe = tessera::Pipeline::from_recipe(tessera::load_recipe("recipes/sd/auto.yaml"), registry);
///
/// Link `tessera::tessera` (find_package(Tessera)). The registry must outlive every pipeline built from it.

namespace tessera {

class Registry;

/// Registers the blocks' (with their selectors), schedulers', guiders' and models' built-ins, in a fixed order (the order
/// `tessera blocks` lists them). Call once per registry: a second call on the same registry throws PluginError
/// (the ids are taken).
void register_builtins(Registry& registry);

}  // namespace tessera
