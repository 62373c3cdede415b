// The AutoencoderKL "component" cases (see the parity README: tiny_sd_vae, tiny_sdxl_vae).
#include "tools/parity/vae_cases.h"

#include <filesystem>

#include <torch/torch.h>

#include "engine/error.h"
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

  if (c.inputs.contains("image")) {
    DiagonalGaussianDistribution dist = vae->encode(need(c, "image"));
    if (c.expected.contains("latent_mean")) cmp.compare("latent_mean", dist.mean, need(c, "latent_mean"));
    if (c.expected.contains("latent_std")) cmp.compare("latent_std", dist.std, need(c, "latent_std"));
    if (c.expected.contains("latent_logvar")) cmp.compare("latent_logvar", dist.logvar, need(c, "latent_logvar"));
  }
  if (c.inputs.contains("latents") && c.expected.contains("decoded"))
    cmp.compare("decoded", vae->decode(need(c, "latents")), need(c, "decoded"));
  return cmp.result();
}

void register_vae_case_runner() { register_component_case_runner("AutoencoderKL", run_vae_case); }

}  // namespace tessera
