// The SD3Transformer2DModel "component" cases (see tests/fixtures/parity/README_dit.md: tiny_sd3_transformer,
// tiny_sd3_5_transformer).
#include "tools/parity/sd3_cases.h"

#include <torch/torch.h>

#include "tessera/error.h"
#include "models/transformers/transformer_sd3.h"
#include "tools/parity/component_cases.h"

namespace tessera {

ParityResult run_sd3_transformer_case(const ParityCase& c) {
  c10::InferenceMode guard;
  const nlohmann::json& p = c.params;
  auto model = SD3Transformer2DModelImpl::from_pretrained(parity_model_folder(c),
                                                          p.value("subfolder", std::string("transformer")));
  const at::Tensor hidden_states = required_parity_tensor(c, "hidden_states");
  const at::Tensor encoder_hidden_states = required_parity_tensor(c, "encoder_hidden_states");
  const at::Tensor pooled_projections = required_parity_tensor(c, "pooled_projections");
  const at::Tensor timestep = required_parity_tensor(c, "timestep");  // sigma * 1000, used as given
  ParityComparison cmp(c.tolerance);
  if (!c.expected.contains("sample") && !c.expected.contains("sample_skip_layers_0"))
    throw ValidationError("case " + c.name + " expects neither `sample` nor `sample_skip_layers_0`");
  if (c.expected.contains("sample"))
    cmp.compare("sample", model->forward(hidden_states, encoder_hidden_states, pooled_projections, timestep),
                required_parity_tensor(c, "sample"));
  if (c.expected.contains("sample_skip_layers_0")) {
    SD3TransformerInputs in;
    in.skip_layers = {0};
    cmp.compare("sample_skip_layers_0",
                model->forward(hidden_states, encoder_hidden_states, pooled_projections, timestep, in),
                required_parity_tensor(c, "sample_skip_layers_0"));
  }
  return cmp.result();
}

void register_sd3_case_runner() { register_component_case_runner("SD3Transformer2DModel", run_sd3_transformer_case); }

}  // namespace tessera
