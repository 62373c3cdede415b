#include "blocks/sd/ip_adapter.h"

#include "blocks/sd/sd_common.h"
#include "blocks/sd/sd_params.h"
#include "tessera/components.h"
#include "models/adapters/ip_adapter.h"
#include "models/adapters/ip_adapter_unet.h"
#include "models/unet/unet_2d_condition.h"

namespace tessera {

namespace {

const InputParam ip_adapter_image{
    "ip_adapter_image", Kind::Image,
    "The IP-Adapter's reference image (any size: the adapter's feature extractor resizes and crops it); several "
    "images together form one reference, as a list of images for one adapter in diffusers",
    true};
const InputParam ip_adapter_scale{
    "ip_adapter_scale", Kind::Float,
    "How strongly the reference image steers the picture (diffusers' set_ip_adapter_scale; 0 = not at all, "
    "0.5-0.7 keeps the prompt in charge)",
    false, Value(1.0)};
const OutputParam pixel_values_out{"ip_adapter_pixel_values", Kind::Tensor,
                                   "The reference image(s) after the feature extractor [n, 3, S, S]"};
const OutputParam embeds_out{"ip_adapter_embeds", Kind::Tensor,
                             "Image encoder features [1, n, D] (base: image_embeds) or [1, n, L, H] (Plus: the "
                             "penultimate hidden states), as the modular SDXL IP-Adapter step outputs them"};
const OutputParam negative_embeds_out{"negative_ip_adapter_embeds", Kind::Tensor,
                                      "The features of the unconditional passes (zeros; Plus: of a zero image)"};
const OutputParam tokens_out{"ip_adapter_tokens", Kind::Tensor,
                             "IP-Adapter image tokens [B, n, T, C]: extra keys/values of every cross-attention layer"};
const OutputParam negative_tokens_out{"negative_ip_adapter_tokens", Kind::Tensor,
                                      "IP-Adapter tokens of the unconditional passes [B, n, T, C]"};

/// [b, C, H, W] float in [0, 1] (an image input) → b images [H, W, C] uint8, the 8-bit pixels the feature
/// extractor resamples as Pillow does (images read from 8-bit files come back exactly).
std::vector<at::Tensor> to_uint8_images(const at::Tensor& pixels) {
  const at::Tensor u8 = pixels.to(at::kFloat).mul(255.0).round().clamp(0, 255).to(at::kByte);
  std::vector<at::Tensor> out;
  for (int64_t i = 0; i < u8.size(0); ++i) out.push_back(u8[i].permute({1, 2, 0}).contiguous());  // [H, W, C]
  return out;
}

}  // namespace

ComponentSpec sd::ip_adapter_component() {
  ComponentSpec c;
  c.name = "ip_adapter";
  c.type = "IPAdapter";
  c.description = "The IP-Adapter (its .safetensors file and image encoder folder)";
  return c;
}

BlockSpec SDPrepareIPAdapterStep::spec() const {
  return BlockSpec(kId, kDescription)
      .component(sd::ip_adapter_component())
      .component(sd::unet_component())
      .input(ip_adapter_image)
      .input(ip_adapter_scale)
      .input(sd::batch_size)
      .input(sd::num_images_per_prompt)
      .output(pixel_values_out)
      .output(embeds_out)
      .output(negative_embeds_out)
      .output(tokens_out)
      .output(negative_tokens_out);
}

void SDPrepareIPAdapterStep::run(Components& c, BlockState& s) const {
  c10::InferenceMode guard;
  auto ip = c.get_as<IPAdapterImpl>(sd::ip_adapter_component().name);
  auto unet = c.get_as<UNet2DConditionModelImpl>("unet");
  const std::string adapter = sd::component_where(c, sd::ip_adapter_component().name);
  // The adapter's tokens must have the UNet's cross-attention width (SD 1.x 768, SD 2.x 1024, SDXL 2048).
  const int64_t cross = unet->config.cross_attention_dim.empty() ? 0 : unet->config.cross_attention_dim.front();
  if (ip->image_proj->cross_attention_dim != cross)
    throw InputError("the IP-Adapter (" + adapter + ") makes tokens of width " +
                         std::to_string(ip->image_proj->cross_attention_dim) + ", the UNet (" +
                         sd::component_where(c, "unet") + ", " + sd::unet_family(unet->config) +
                         ") attends to width " + std::to_string(cross),
                     {}, s.block_path(), "use an IP-Adapter made for the model's family (ip-adapter_sd15 for SD 1.x, "
                                         "ip-adapter_sdxl for SDXL)");
  const double scale = s.get_float(ip_adapter_scale.name);

  const at::Tensor& pixels = s.get(ip_adapter_image.name).images(ip_adapter_image.name).pixels;  // [n, C, H, W]
  at::Tensor pixel_values;
  try {
    pixel_values = ip->feature_extractor.preprocess(to_uint8_images(pixels)).pixel_values;  // [n, 3, S, S]
  } catch (const Error& e) {
    throw InputError(ip_adapter_image.name + ": " + e.message(), {}, s.block_path(), e.hint());
  }
  auto [embeds, negative] = ip->encode_image(pixel_values);  // [n, D] or [n, L, H]
  embeds = embeds.unsqueeze(0), negative = negative.unsqueeze(0);  // [1, n, …]: n images of one adapter
  // Every prompt and image per prompt sees the same reference (diffusers repeats it num_images_per_prompt times
  // for its single prompt).
  const int64_t total = sd::total_batch(s);
  auto batched = [&](const at::Tensor& features) {
    const at::Tensor tokens = ip->image_proj->project(features);  // [1, n, T, C]
    return tokens.expand({total, -1, -1, -1}).contiguous();       // [B·k, n, T, C]
  };
  at::Tensor tokens = batched(embeds), negative_tokens = batched(negative);

  // Installing (again) replaces whatever IP processors the UNet has; UNet calls without tokens stay plain.
  install_ip_adapter(*unet, *ip, scale);

  s.set(pixel_values_out.name, pixel_values);
  s.set(embeds_out.name, embeds);
  s.set(negative_embeds_out.name, negative);
  s.set(tokens_out.name, tokens);
  s.set(negative_tokens_out.name, negative_tokens);
}

}  // namespace tessera
