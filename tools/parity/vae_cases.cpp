// The AutoencoderKL "component" cases (see the parity READMEs: tiny_sd_vae, tiny_sdxl_vae; tiny_flux_vae,
// tiny_sd3_vae, whose params carry shift_factor: the FLUX/SD3 latent convention).
#include "tools/parity/vae_cases.h"

#include <filesystem>

#include <torch/torch.h>

#include "tessera/error.h"
#include "models/vae/autoencoder_kl.h"
#include "tools/parity/component_cases.h"

namespace tessera {

namespace {
at::Tensor need(const ParityCase& c, const std::string& name) { return required_parity_tensor(c, name); }
}  // namespace

ParityResult run_vae_case(const ParityCase& c) {
  c10::InferenceMode guard;
  const nlohmann::json& p = c.params;
  const std::string folder = parity_model_folder(c);
  auto vae = AutoencoderKLImpl::from_pretrained(folder, p.value("subfolder", std::string("vae")));
  ParityComparison cmp(c.tolerance);
  if (p.contains("scaling_factor") && p["scaling_factor"].is_number())
    cmp.compare_scalar("scaling_factor", vae->config.scaling_factor, p["scaling_factor"].get<double>());

  // FLUX / SD3 convention (README_dit.md "Runner notes"): latents live in transformer space,
  // image_latents = (mean - shift) * scale and decoded = decode(latents / scale + shift). SD/SDXL cases decode the
  // latents as given.
  const bool shifted = p.contains("shift_factor") && p["shift_factor"].is_number();
  if (shifted) {
    if (!vae->config.shift_factor)
      throw ValidationError("case '" + c.name + "' has params.shift_factor but the VAE config has none");
    cmp.compare_scalar("shift_factor", *vae->config.shift_factor, p["shift_factor"].get<double>());
  }
  const double scale = vae->config.scaling_factor;
  const double shift = shifted ? *vae->config.shift_factor : 0.0;

  if (c.inputs.contains("image")) {
    DiagonalGaussianDistribution dist = vae->encode(need(c, "image"));
    if (c.expected.contains("latent_mean")) cmp.compare("latent_mean", dist.mean, need(c, "latent_mean"));
    if (c.expected.contains("latent_std")) cmp.compare("latent_std", dist.std, need(c, "latent_std"));
    if (c.expected.contains("latent_logvar")) cmp.compare("latent_logvar", dist.logvar, need(c, "latent_logvar"));
    if (c.expected.contains("image_latents")) {
      if (!shifted) throw ValidationError("case '" + c.name + "' expects image_latents but has no params.shift_factor");
      cmp.compare("image_latents", (dist.mean - shift) * scale, need(c, "image_latents"));
    }
  }
  if (c.inputs.contains("latents") && c.expected.contains("decoded")) {
    const at::Tensor latents = need(c, "latents");
    cmp.compare("decoded", vae->decode(shifted ? latents / scale + shift : latents), need(c, "decoded"));
  }
  return cmp.result();
}

void register_vae_case_runner() { register_component_case_runner("AutoencoderKL", run_vae_case); }

}  // namespace tessera
