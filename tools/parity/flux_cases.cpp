// The FluxTransformer2DModel "component" cases (see tests/fixtures/parity/README_dit.md: tiny_flux_transformer,
// tiny_flux_dev_transformer).
#include "tools/parity/flux_cases.h"

#include <torch/torch.h>

#include "tessera/error.h"
#include "models/transformers/transformer_flux.h"
#include "tools/parity/component_cases.h"

namespace tessera {

ParityResult run_flux_transformer_case(const ParityCase& c) {
  c10::InferenceMode guard;
  const nlohmann::json& p = c.params;
  auto model = FluxTransformer2DModelImpl::from_pretrained(parity_model_folder(c),
                                                           p.value("subfolder", std::string("transformer")));
  const at::Tensor hidden_states = required_parity_tensor(c, "hidden_states");  // packed [B, S_img, 4C]
  const at::Tensor encoder_hidden_states = required_parity_tensor(c, "encoder_hidden_states");
  const at::Tensor pooled_projections = required_parity_tensor(c, "pooled_projections");
  const at::Tensor timestep = required_parity_tensor(c, "timestep");  // t / 1000
  const at::Tensor guidance = c.inputs.contains("guidance") ? required_parity_tensor(c, "guidance") : at::Tensor();
  ParityComparison cmp(c.tolerance);
  if (!c.expected.contains("sample") && !c.expected.contains("sample_random_ids"))
    throw ValidationError("case " + c.name + " expects neither `sample` nor `sample_random_ids`");
  if (c.expected.contains("sample"))
    cmp.compare("sample",
                model->forward(hidden_states, encoder_hidden_states, pooled_projections, timestep,
                               required_parity_tensor(c, "img_ids"), required_parity_tensor(c, "txt_ids"), guidance),
                required_parity_tensor(c, "sample"));
  if (c.expected.contains("sample_random_ids"))
    cmp.compare("sample_random_ids",
                model->forward(hidden_states, encoder_hidden_states, pooled_projections, timestep,
                               required_parity_tensor(c, "img_ids_random"), required_parity_tensor(c, "txt_ids_random"),
                               guidance),
                required_parity_tensor(c, "sample_random_ids"));
  return cmp.result();
}

void register_flux_case_runner() {
  register_component_case_runner("FluxTransformer2DModel", run_flux_transformer_case);
}

}  // namespace tessera
