#pragma once
/// Registration of the built-in model component types (AutoencoderKL, UNet2DConditionModel, CLIPTextModel…).
namespace tessera {

class Registry;

/// Adds every built-in model type to `registry` (ComponentCategory::Model). Each model file provides its own
/// `register_<model>(Registry&)`, called from here.
void register_builtin_models(Registry& registry);

}  // namespace tessera
