#pragma once
/// IP-Adapter for Stable Diffusion 1.x/2.x and SDXL (diffusers' load_ip_adapter + prepare_ip_adapter_image_embeds,
/// the modular SDXL StableDiffusionXLIPAdapterStep): a reference image steers the picture through extra
/// cross-attention tokens. One block before the loop; the denoisers (sd.loop_denoiser, sd.loop_controlnet_denoiser)
/// hand the tokens to the UNet when the state has them:
///   before   sd.prepare_ip_adapter   image → CLIP image encoder → image projection → ip_adapter_tokens (+ negative),
///                                    the adapter's attention processors installed on the UNet at ip_adapter_scale
/// The tokens are guider fields like the text embeddings, so every pass (and batched passes) gets its rows.
#include "tessera/block.h"

namespace tessera {

namespace sd {
/// The IP-Adapter component (`ip_adapter` of the recipe: the adapter's .safetensors with its image encoder).
ComponentSpec ip_adapter_component();
}  // namespace sd

/// ip_adapter_image (one image, or several that together form the reference, as a list for one adapter in
/// diffusers) → the adapter's feature extractor (CLIPImageProcessor, Pillow bicubic on the 8-bit image) → image
/// encoder (base: image_embeds, negative zeros; Plus: hidden_states[-2], negative of a zero image) → image
/// projection → ip_adapter_tokens / negative_ip_adapter_tokens [B·n, images, tokens, cross], repeated to every
/// prompt and image per prompt. Installs the adapter on the UNet's cross-attention layers at ip_adapter_scale
/// (calls without tokens stay the plain UNet). Checks the adapter fits the UNet (cross-attention width, layer
/// count and shapes, naming the layer).
class SDPrepareIPAdapterStep final : public LeafBlock {
 public:
  static constexpr const char* kId = "sd.prepare_ip_adapter";
  static constexpr const char* kDescription =
      "Encode the IP-Adapter's reference image into image tokens for the UNet's cross-attention (ip_adapter_tokens) "
      "and install the adapter on the UNet at ip_adapter_scale";
  static std::vector<InputParam> params() { return {}; }
  explicit SDPrepareIPAdapterStep(const ValueMap& = {}) {}
  BlockSpec spec() const override;
  void run(Components& components, BlockState& state) const override;
};

}  // namespace tessera
