#include "blocks/sd3/decoders.h"

#include "blocks/common/flow_match.h"
#include "blocks/common/image_processor.h"
#include "blocks/sd/sd_common.h"
#include "blocks/sd/sd_params.h"
#include "blocks/sd3/sd3_params.h"
#include "tessera/components.h"
#include "models/vae/autoencoder_kl.h"

namespace tessera {

BlockSpec SD3DecodeStep::spec() const {
  return BlockSpec(kId, kDescription)
      .component(sd::vae_component())
      .config(sd::vae_tiling)
      .input(sd3::latents)
      .input(sd::output_type)
      .output(sd::images_out);
}

void SD3DecodeStep::run(Components& c, BlockState& s) const {
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
  const at::Tensor& latents = s.tensor(sd3::latents.name);
  if (latents.dim() != 4 || latents.size(1) != vae->config.latent_channels)
    throw InputError("latents " + Value(latents).repr() + " do not fit the VAE (" +
                         std::to_string(vae->config.latent_channels) + " latent channels)",
                     {}, s.block_path());
  at::Tensor decoded = vae->decode(flow::from_vae_latents(latents, *vae));  // [B, 3, H, W] in ~[-1, 1]
  s.set(sd::images_out.name, Value(ImageBatch{postprocess_image(decoded.to(at::kFloat))}));
}

}  // namespace tessera
