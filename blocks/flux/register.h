#pragma once
namespace tessera {
class Registry;
/// Registers the flux.* blocks (FLUX.1 schnell / dev: text2image, image2image).
void register_flux_blocks(Registry& registry);
}  // namespace tessera
