// The "guider" case kind: replays diffusers.guiders on golden predictions (see the parity README).
#include "tools/parity/guider_cases.h"

#include "tessera/error.h"
#include "engine/safetensors.h"
#include "guiders/register.h"

namespace tessera {

ParityResult run_guider_case(const ParityCase& c) {
  const nlohmann::json& p = c.params;
  if (!p.contains("guider_class") || !p["guider_class"].is_string())
    throw ValidationError("params.guider_class is missing or not a string");
  if (!p.contains("num_inference_steps") || !p["num_inference_steps"].is_number_integer())
    throw ValidationError("params.num_inference_steps is missing or not an integer");
  GuiderPtr guider = make_guider(p["guider_class"].get<std::string>(), p.value("init_kwargs", nlohmann::json::object()));
  const int64_t steps = p["num_inference_steps"].get<int64_t>();

  SafetensorsFile file(c.file);
  for (const char* name : {"pred_cond", "pred_uncond", "timesteps", "pred"})
    if (!file.has(name)) throw ValidationError("case file " + file.path() + " lacks tensor '" + name + "'");
  at::Tensor pred_cond = file.tensor("pred_cond"), pred_uncond = file.tensor("pred_uncond");
  at::Tensor timesteps = file.tensor("timesteps"), expected = file.tensor("pred");
  at::Tensor pred_cond_skip = file.has("pred_cond_skip") ? file.tensor("pred_cond_skip") : at::Tensor();

  ParityComparison cmp(c.tolerance);
  for (int64_t i = 0; i < steps; ++i) {
    guider->set_state(i, steps, timesteps[i]);
    guider->prepare_inputs({});  // resets per-run state at step 0 (APG momentum), as the case notes say
    std::map<std::string, at::Tensor> preds{{"pred_cond", pred_cond[i]}, {"pred_uncond", pred_uncond[i]}};
    if (pred_cond_skip.defined()) preds["pred_cond_skip"] = pred_cond_skip[i];
    at::Tensor got = guider->forward(preds).pred, want = expected[i];
    // diffusers' output can be NaN (CFG-Zero* zero-init step with guidance_rescale: rescaling zeros is 0/0);
    // parity then means NaN in the same places, so matching NaNs are compared as zeros.
    at::Tensor both_nan = at::isnan(got) & at::isnan(want);
    if (both_nan.any().item<bool>()) {
      got = at::where(both_nan, at::zeros_like(got), got);
      want = at::where(both_nan, at::zeros_like(want), want);
    }
    cmp.compare("pred[" + std::to_string(i) + "]", got, want);
  }
  return cmp.result();
}

void register_guider_case_runner() { register_case_runner("guider", run_guider_case); }

}  // namespace tessera
