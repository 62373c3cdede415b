#include "blocks/sd3/sd3_common.h"

#include "blocks/sd/sd_params.h"
#include "blocks/sd3/sd3_params.h"
#include "tessera/components.h"
#include "tessera/error.h"
#include "models/transformers/transformer_sd3.h"

namespace tessera::sd3 {

// ---------------------------------------------------------------- component specs

ComponentSpec tokenizer_3_component() {
  ComponentSpec c;
  c.name = "tokenizer_3";
  c.type = "T5Tokenizer";
  c.description = "T5 tokenizer (tokenizer_3/ of the model folder)";
  return c;
}

ComponentSpec text_encoder_3_component() {
  ComponentSpec c;
  c.name = "text_encoder_3";
  c.type = "T5EncoderModel";
  c.description = "T5 text encoder (text_encoder_3/ of the model folder)";
  return c;
}

ComponentSpec transformer_component() {
  ComponentSpec c;
  c.name = "transformer";
  c.type = "SD3Transformer2DModel";
  c.description = "The denoiser (MMDiT)";
  return c;
}

ComponentSpec guider_component() {
  ComponentSpec c;
  c.name = "guider";
  c.type = "ClassifierFreeGuidance";
  c.description = "Any guider; classifier-free guidance at 7.0 unless the recipe declares another";
  c.config = Value(ValueMap{{"guidance_scale", Value(7.0)}});
  c.creation = Creation::FromConfig;
  return c;
}

// ---------------------------------------------------------------- sizes

std::pair<int64_t, int64_t> image_size(const BlockState& s, const SD3Transformer2DModelImpl& transformer,
                                       int64_t vae_scale_factor) {
  const int64_t fallback = transformer.config.sample_size * vae_scale_factor;
  const int64_t h = s.has(sd::height.name) ? s.get_int(sd::height.name) : fallback;
  const int64_t w = s.has(sd::width.name) ? s.get_int(sd::width.name) : fallback;
  const int64_t m = vae_scale_factor * transformer.config.patch_size;
  if (h <= 0 || w <= 0 || h % m != 0 || w % m != 0)
    throw InputError("height and width must be positive multiples of " + std::to_string(m) + " (VAE factor " +
                         std::to_string(vae_scale_factor) + " × patch size " +
                         std::to_string(transformer.config.patch_size) + "), got height " + std::to_string(h) +
                         " and width " + std::to_string(w),
                     {}, s.block_path(),
                     "use e.g. height " + std::to_string(std::max(m, h - h % m)) + " and width " +
                         std::to_string(std::max(m, w - w % m)));
  if (h > 16384 || w > 16384)
    throw InputError("height and width must be at most 16384, got " + std::to_string(h) + "×" + std::to_string(w), {},
                     s.block_path());
  return {h, w};
}

int64_t image_seq_len(int64_t height, int64_t width, const SD3Transformer2DModelImpl& transformer,
                      int64_t vae_scale_factor) {
  const int64_t p = transformer.config.patch_size;
  return (height / vae_scale_factor / p) * (width / vae_scale_factor / p);
}

}  // namespace tessera::sd3
