#include "blocks/flux/flux_common.h"

#include "blocks/flux/flux_params.h"
#include "tessera/error.h"

namespace tessera::flux {

at::Tensor pack_latents(const at::Tensor& latents) {
  const int64_t b = latents.size(0), c = latents.size(1), h = latents.size(2), w = latents.size(3);
  at::Tensor x = latents.view({b, c, h / 2, 2, w / 2, 2});  // [B, C, h/2, 2, w/2, 2]
  x = x.permute({0, 2, 4, 1, 3, 5});                        // [B, h/2, w/2, C, 2, 2]
  return x.reshape({b, (h / 2) * (w / 2), c * 4});          // [B, (h/2)(w/2), 4C]
}

at::Tensor unpack_latents(const at::Tensor& packed, int64_t h, int64_t w) {
  const int64_t b = packed.size(0), channels = packed.size(2);
  at::Tensor x = packed.view({b, h / 2, w / 2, channels / 4, 2, 2});  // [B, h/2, w/2, C, 2, 2]
  x = x.permute({0, 3, 1, 4, 2, 5});                                  // [B, C, h/2, 2, w/2, 2]
  return x.reshape({b, channels / 4, h, w});                          // [B, C, h, w]
}

at::Tensor make_latent_image_ids(int64_t rows, int64_t cols) {
  at::Tensor ids = at::zeros({rows, cols, 3}, at::kFloat);
  ids.select(2, 1).add_(at::arange(rows, at::kFloat).unsqueeze(1));  // row
  ids.select(2, 2).add_(at::arange(cols, at::kFloat).unsqueeze(0));  // col
  return ids.reshape({rows * cols, 3});                               // [rows*cols, 3]
}

std::pair<int64_t, int64_t> latent_size(int64_t height, int64_t width, int64_t f, const std::string& block_path) {
  const int64_t multiple = 2 * f;
  if (height <= 0 || width <= 0 || height % multiple != 0 || width % multiple != 0)
    throw InputError("height and width must be positive multiples of " + std::to_string(multiple) +
                         " (the VAE factor " + std::to_string(f) + " × the 2×2 packing), got " +
                         std::to_string(height) + "×" + std::to_string(width),
                     {}, block_path,
                     "e.g. --set height=" + std::to_string(std::max<int64_t>(multiple, height / multiple * multiple)) +
                         " --set width=" + std::to_string(std::max<int64_t>(multiple, width / multiple * multiple)));
  return {height / f, width / f};
}

}  // namespace tessera::flux

// ---------------------------------------------------------------- component specs (flux_params.h)

namespace tessera::flux {

ComponentSpec transformer_component() {
  ComponentSpec c;
  c.name = "transformer";
  c.type = "FluxTransformer2DModel";
  c.description = "The FLUX.1 denoiser (transformer/ of the model folder)";
  return c;
}

ComponentSpec t5_tokenizer_component(const std::string& name) {
  ComponentSpec c;
  c.name = name;
  c.type = "T5Tokenizer";
  c.description = "T5 tokenizer (" + name + "/ of the model folder: spiece.model)";
  return c;
}

ComponentSpec t5_encoder_component(const std::string& name) {
  ComponentSpec c;
  c.name = name;
  c.type = "T5EncoderModel";
  c.description = "T5 text encoder (" + name + "/ of the model folder)";
  return c;
}

ComponentSpec guider_component() {
  ComponentSpec c;
  c.name = "guider";
  c.type = "ClassifierFreeGuidance";
  c.description = "Any guider; classifier-free guidance at scale 1 (off: FLUX.1 is guidance-distilled) unless the "
                  "recipe declares another or true_cfg_scale is set";
  c.config = Value(ValueMap{{"guidance_scale", Value(1.0)}});
  c.creation = Creation::FromConfig;
  return c;
}

}  // namespace tessera::flux
