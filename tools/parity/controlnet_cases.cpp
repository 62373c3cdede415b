// ControlNet component cases (manifest_control.json).
#include "tools/parity/controlnet_cases.h"

#include <filesystem>

#include <torch/torch.h>

#include "tessera/error.h"
#include "models/controlnets/controlnet_model.h"
#include "models/unet/unet_2d_condition.h"
#include "tools/parity/component_cases.h"
#include "tools/parity/parity.h"

namespace fs = std::filesystem;

namespace tessera {

namespace {

at::Tensor need(const ParityCase& c, const std::string& name) { return required_parity_tensor(c, name); }

at::Tensor timestep_of(const ParityCase& c) {
  if (c.inputs.contains("timestep")) return need(c, "timestep");
  const auto& t = c.params.at("timestep");
  return t.is_number_integer() ? at::scalar_tensor(t.get<int64_t>(), at::kLong) : at::scalar_tensor(t.get<double>(), at::kFloat);
}

void compare_residuals(ParityComparison& cmp, const ParityCase& c, const ControlNetOutput& out, const std::string& prefix) {
  for (size_t j = 0; j < out.down_block_res_samples.size(); ++j) {
    const std::string name = prefix + "down_block_res_sample_" + std::to_string(j);
    if (!c.expected.contains(name)) {
      cmp.fail("the ControlNet gave residual " + name + ", which the case does not have");
      continue;
    }
    cmp.compare(name, out.down_block_res_samples[j], need(c, name));
  }
  if (c.expected.contains(prefix + "down_block_res_sample_" + std::to_string(out.down_block_res_samples.size())))
    cmp.fail("the case has more down residuals than the ControlNet gave (" +
             std::to_string(out.down_block_res_samples.size()) + ")");
  cmp.compare(prefix + "mid_block_res_sample", out.mid_block_res_sample, need(c, prefix + "mid_block_res_sample"));
}

ParityResult run_controlnet_forward_case(const ParityCase& c) {
  c10::InferenceMode guard;
  auto cn = ControlNetModelImpl::from_pretrained(parity_model_folder(c));
  ParityComparison cmp(c.tolerance);
  UNet2DConditionInputs in;
  if (c.inputs.contains("text_embeds")) in.text_embeds = need(c, "text_embeds");
  if (c.inputs.contains("time_ids")) in.time_ids = need(c, "time_ids");
  const double scale = c.params.value("conditioning_scale", 1.0);
  const at::Tensor sample = need(c, "sample"), ehs = need(c, "encoder_hidden_states"), cond = need(c, "controlnet_cond");
  const at::Tensor t = timestep_of(c);
  if (c.expected.contains("cond_embedding")) cmp.compare("cond_embedding", cn->cond_embedding(cond), need(c, "cond_embedding"));
  compare_residuals(cmp, c, cn->forward(sample, t, ehs, cond, in, scale, false), "");
  if (c.expected.contains("guess_mid_block_res_sample"))
    compare_residuals(cmp, c, cn->forward(sample, t, ehs, cond, in, scale, true), "guess_");
  if (c.expected.contains("guess_mode_scales")) {
    const int64_t n = need(c, "guess_mode_scales").numel();
    cmp.compare("guess_mode_scales", at::logspace(-1, 0, n, 10.0, at::TensorOptions().dtype(at::kFloat)),
                need(c, "guess_mode_scales"));
  }
  return cmp.result();
}

ParityResult run_controlnet_step0_case(const ParityCase& c) {
  c10::InferenceMode guard;
  const std::string cn_folder = parity_model_folder(c);
  auto cn = ControlNetModelImpl::from_pretrained(cn_folder);
  // The UNet of the pipeline case: tiny-sd-controlnet -> tiny-sd.
  std::string base = c.params.value("model", std::string());
  const auto suffix = base.rfind("-controlnet");
  if (suffix == std::string::npos) throw ValidationError("case " + c.name + ": params.model is not a *-controlnet folder");
  base = base.substr(0, suffix);
  auto unet = UNet2DConditionModelImpl::from_pretrained((fs::path(c.models_dir) / base).string(), "unet");
  ParityComparison cmp(c.tolerance);
  const bool guess = c.params.value("guess_mode", false);
  const double scale = c.params.value("conditioning_scale_step0", 1.0);
  UNet2DConditionInputs cn_in;
  if (c.inputs.contains("controlnet_text_embeds")) cn_in.text_embeds = need(c, "controlnet_text_embeds");
  if (c.inputs.contains("controlnet_time_ids")) cn_in.time_ids = need(c, "controlnet_time_ids");
  const at::Tensor t = timestep_of(c);
  ControlNetOutput r = cn->forward(need(c, "controlnet_sample"), t, need(c, "controlnet_encoder_hidden_states"),
                                   need(c, "controlnet_cond"), cn_in, scale, guess);
  compare_residuals(cmp, c, r, "");

  UNet2DConditionInputs unet_in = cn_in;
  at::Tensor sample = need(c, "controlnet_sample"), ehs = need(c, "controlnet_encoder_hidden_states");
  if (c.inputs.contains("unet_sample")) {
    sample = need(c, "unet_sample");
    ehs = need(c, "unet_encoder_hidden_states");
    if (c.inputs.contains("unet_text_embeds")) unet_in.text_embeds = need(c, "unet_text_embeds");
    if (c.inputs.contains("unet_time_ids")) unet_in.time_ids = need(c, "unet_time_ids");
  }
  if (guess) {
    // Guess mode: the ControlNet saw the cond rows only; the uncond rows get zero residuals ([uncond, cond]).
    for (auto& d : r.down_block_res_samples) d = at::cat({at::zeros_like(d), d});
    r.mid_block_res_sample = at::cat({at::zeros_like(r.mid_block_res_sample), r.mid_block_res_sample});
  }
  unet_in.down_block_additional_residuals = r.down_block_res_samples;
  unet_in.mid_block_additional_residual = r.mid_block_res_sample;
  cmp.compare("unet_noise_pred", unet->forward(sample, t, ehs, unet_in), need(c, "unet_noise_pred"));
  return cmp.result();
}

}  // namespace

void register_controlnet_case_runners() {
  register_component_case_prefix_runner("controlnet_sd_model_forward", run_controlnet_forward_case);
  register_component_case_prefix_runner("controlnet_sdxl_model_forward", run_controlnet_forward_case);
  register_component_case_prefix_runner("controlnet_sd_step0_", run_controlnet_step0_case);
  register_component_case_prefix_runner("controlnet_sdxl_step0_", run_controlnet_step0_case);
}

}  // namespace tessera
