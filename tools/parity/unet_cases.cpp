// The UNet2DConditionModel "component" cases (see the parity README: tiny_sd_unet, tiny_sdxl_unet).
#include "tools/parity/unet_cases.h"

#include <filesystem>

#include <torch/torch.h>

#include "tessera/error.h"
#include "models/unet/unet_2d_condition.h"
#include "tools/parity/component_cases.h"

namespace tessera {

namespace {
at::Tensor need(const ParityCase& c, const std::string& name) { return required_parity_tensor(c, name); }
}  // namespace

ParityResult run_unet_case(const ParityCase& c) {
  c10::InferenceMode guard;
  const nlohmann::json& p = c.params;
  const std::string folder = parity_model_folder(c);
  auto unet = UNet2DConditionModelImpl::from_pretrained(folder, p.value("subfolder", std::string("unet")));
  ParityComparison cmp(c.tolerance);
  const at::Tensor sample = need(c, "sample"), ehs = need(c, "encoder_hidden_states");
  UNet2DConditionInputs in;
  if (c.inputs.contains("text_embeds")) in.text_embeds = need(c, "text_embeds");
  if (c.inputs.contains("time_ids")) in.time_ids = need(c, "time_ids");
  if (c.inputs.contains("timestep_cond")) in.timestep_cond = need(c, "timestep_cond");

  if (c.expected.contains("out_scalar_timestep")) {
    const double t = p.at("timestep_scalar").get<double>();
    const at::Tensor ts = p["timestep_scalar"].is_number_integer() ? at::scalar_tensor(p["timestep_scalar"].get<int64_t>(), at::kLong)
                                                                    : at::scalar_tensor(t, at::kFloat);
    cmp.compare("out_scalar_timestep", unet->forward(sample, ts, ehs, in), need(c, "out_scalar_timestep"));
  }
  if (c.expected.contains("out_per_batch_timestep"))
    cmp.compare("out_per_batch_timestep", unet->forward(sample, need(c, "timestep_per_batch"), ehs, in),
                need(c, "out_per_batch_timestep"));
  if (c.expected.contains("out")) {
    if (!p.contains("timestep") || !p["timestep"].is_number()) throw ValidationError("params.timestep is missing");
    const at::Tensor ts = p["timestep"].is_number_integer() ? at::scalar_tensor(p["timestep"].get<int64_t>(), at::kLong)
                                                            : at::scalar_tensor(p["timestep"].get<double>(), at::kFloat);
    cmp.compare("out", unet->forward(sample, ts, ehs, in), need(c, "out"));
  }
  return cmp.result();
}

void register_unet_case_runner() { register_component_case_runner("UNet2DConditionModel", run_unet_case); }

}  // namespace tessera
