#include "blocks/flux/decoders.h"

#include "blocks/common/flow_match.h"
#include "blocks/common/image_processor.h"
#include "blocks/flux/flux_common.h"
#include "blocks/flux/flux_params.h"
#include "blocks/sd/sd_common.h"
#include "tessera/components.h"
#include "models/vae/autoencoder_kl.h"

namespace tessera {

BlockSpec FluxDecodeStep::spec() const {
  InputParam height{"height", Kind::Int, "Image height in pixels", true};
  InputParam width{"width", Kind::Int, "Image width in pixels", true};
  return BlockSpec(kId, kDescription)
      .component(sd::vae_component())
      .config(sd::vae_tiling)
      .input(flux::packed_latents)
      .input(height)
      .input(width)
      .input(sd::output_type)
      .output(sd::images_out);
}

void FluxDecodeStep::run(Components& c, BlockState& s) const {
  const std::string& type = s.get_string(sd::output_type.name);
  if (type == "latent") {
    s.set(sd::images_out.name, Value());
    return;
  }
  if (type != "png" && type != "pil" && type != "np" && type != "pt" && type != "tensor")
    throw InputError("output_type must be one of png, pil, np, pt, tensor, latent; got '" + type + "'", {},
                     s.block_path());
  c10::InferenceMode guard;
  auto vae = c.get_as<AutoencoderKLImpl>("vae");
  sd::apply_vae_tiling(c, *vae);
  const int64_t f = sd::vae_scale_factor(*vae);
  auto [h, w] = flux::latent_size(s.get_int("height"), s.get_int("width"), f, s.block_path());
  const at::Tensor& packed = s.tensor(flux::packed_latents.name);
  const int64_t c4 = 4 * vae->config.latent_channels;
  if (packed.dim() != 3 || packed.size(1) != (h / 2) * (w / 2) || packed.size(2) != c4)
    throw InputError("latents " + Value(packed).repr() + " do not fit a " + std::to_string(s.get_int("height")) +
                         "×" + std::to_string(s.get_int("width")) + " image of this VAE (expected [B, " +
                         std::to_string((h / 2) * (w / 2)) + ", " + std::to_string(c4) + "])",
                     {}, s.block_path());
  at::Tensor z = flux::unpack_latents(packed, h, w);              // [B, C, h, w]
  at::Tensor decoded = vae->decode(flow::from_vae_latents(z, *vae));  // [B, 3, H, W] in ~[-1, 1]
  s.set(sd::images_out.name, Value(ImageBatch{postprocess_image(decoded.to(at::kFloat))}));
}

}  // namespace tessera
