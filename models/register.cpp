#include "models/register.h"

#include "tessera/registry.h"
#include "models/adapters/ip_adapter.h"
#include "models/controlnets/controlnet_model.h"
#include "models/loading/component_source.h"
#include "models/text/clip_text_model.h"
#include "models/text/t5_encoder.h"
#include "models/transformers/transformer_flux.h"
#include "models/transformers/transformer_sd3.h"
#include "models/unet/unet_2d_condition.h"
#include "models/vae/autoencoder_kl.h"
#include "models/vision/clip_vision_model.h"

namespace tessera {

// One line per model file; each registers its component type(s).
void register_builtin_models(Registry& registry) {
  register_unet_2d_condition(registry);
  register_clip_text_components(registry);
  register_autoencoder_kl(registry);
  register_transformer_flux(registry);
  register_t5_encoder(registry);
  register_transformer_sd3(registry);
  register_controlnet_model(registry);
  register_clip_vision_model(registry);
  register_ip_adapter(registry);
  register_single_file_source(registry);  // `from` naming a single-file checkpoint
}

}  // namespace tessera
