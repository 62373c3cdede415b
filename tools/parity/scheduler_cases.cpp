// The "scheduler" case kind: replays a diffusers scheduler loop on golden inputs (see the parity README).
#include <set>

#include "engine/safetensors.h"
#include "schedulers/register.h"
#include "tools/parity/parity.h"

namespace tessera {

namespace {

// The schedulers the project means to port; a case for one of these that is not registered yet is skipped,
// anything else is an unknown class and fails.
const std::set<std::string>& planned_schedulers() {
  static const std::set<std::string> s = {
      "DDIMScheduler", "DDPMScheduler", "PNDMScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
      "DPMSolverMultistepScheduler", "UniPCMultistepScheduler", "LMSDiscreteScheduler", "HeunDiscreteScheduler",
      "KDPM2DiscreteScheduler", "LCMScheduler", "FlowMatchEulerDiscreteScheduler"};
  return s;
}

at::Tensor need(const SafetensorsFile& f, const std::string& name) {
  if (!f.has(name)) throw ValidationError("case file " + f.path() + " lacks tensor '" + name + "'");
  return f.tensor(name).clone();
}

SchedulerPtr make_set(const std::string& cls, const nlohmann::json& config, int64_t n,
                      const SetTimestepsOptions& opts) {
  SchedulerPtr s = make_scheduler(cls, config, "parity case config");
  s->set_timesteps(n, opts);
  return s;
}

}  // namespace

ParityResult run_scheduler_case(const ParityCase& c) {
  const nlohmann::json& p = c.params;
  if (!p.contains("scheduler_class") || !p["scheduler_class"].is_string())
    throw ValidationError("params.scheduler_class is missing or not a string");
  const std::string cls = p["scheduler_class"].get<std::string>();
  const auto names = builtin_scheduler_names();
  if (std::find(names.begin(), names.end(), cls) == names.end() && planned_schedulers().count(cls)) {
    ParityResult r;
    r.status = ParityResult::Status::Skip;
    r.reason = "scheduler " + cls + " not implemented yet";
    return r;
  }
  const nlohmann::json config = p.value("scheduler_config", nlohmann::json::object());
  if (!p.contains("num_inference_steps") || !p["num_inference_steps"].is_number_integer())
    throw ValidationError("params.num_inference_steps is missing or not an integer");
  const int64_t n = p["num_inference_steps"].get<int64_t>();
  SetTimestepsOptions opts;
  const nlohmann::json set_kwargs = p.value("set_timesteps_kwargs", nlohmann::json::object());
  for (auto& [k, v] : set_kwargs.items()) {
    if (k == "mu" && v.is_number()) opts.mu = v.get<double>();
    else throw ValidationError("set_timesteps_kwargs '" + k + "' is not supported by the runner");
  }

  SafetensorsFile file(c.file);
  ParityComparison cmp(c.tolerance);
  SchedulerPtr s = make_set(cls, config, n, opts);
  const nlohmann::json step_kwargs = p.value("step_kwargs", nlohmann::json::object());
  for (auto& [k, v] : step_kwargs.items()) {
    if (!v.is_number() && !v.is_boolean()) throw ValidationError("step_kwargs '" + k + "' is not a number");
    s->set_step_option(k, v.is_boolean() ? (v.get<bool>() ? 1.0 : 0.0) : v.get<double>());
  }

  if (c.expected.contains("timesteps")) cmp.compare("timesteps", s->timesteps(), need(file, "timesteps"));
  if (c.expected.contains("sigmas")) cmp.compare("sigmas", s->sigmas(), need(file, "sigmas"));
  if (p.contains("init_noise_sigma"))
    cmp.compare_scalar("init_noise_sigma", s->init_noise_sigma(), p["init_noise_sigma"].get<double>());
  if (p.contains("order") && p["order"].get<int>() != s->order())
    cmp.fail("order " + std::to_string(s->order()) + ", diffusers has " + std::to_string(p["order"].get<int>()));
  if (!cmp.ok()) return cmp.result();

  const int64_t calls = p.value("num_step_calls", s->timesteps().size(0));
  if (s->timesteps().size(0) != calls) {
    cmp.fail(std::to_string(s->timesteps().size(0)) + " timesteps but the case makes " + std::to_string(calls) +
             " step calls");
    return cmp.result();
  }
  at::Tensor x = need(file, "sample_init");
  at::Tensor model_outputs = need(file, "model_outputs");
  if (model_outputs.size(0) < calls) throw ValidationError("model_outputs has fewer entries than step calls");
  const bool stochastic = c.inputs.contains("step_noise");
  at::Tensor step_noise, step_noise_mask;
  if (stochastic) {
    step_noise = need(file, "step_noise");
    step_noise_mask = need(file, "step_noise_mask");
  }
  // Stochastic steps without recorded noise draw from a fixed generator, so a wrong draw still reproduces.
  at::Generator gen = at::detail::createCPUGenerator(0);
  std::vector<at::Tensor> scaled, prev, pred_x0;
  bool has_x0 = true;
  for (int64_t i = 0; i < calls; ++i) {
    const double t = s->timestep_at(i);
    scaled.push_back(s->scale_model_input(x, t));
    std::optional<at::Tensor> noise;
    if (stochastic && step_noise_mask[i].item<int64_t>() != 0) noise = step_noise[i];
    SchedulerOutput o = s->step(model_outputs[i], t, x, gen, noise);
    x = o.prev_sample;
    prev.push_back(x);
    if (o.pred_original_sample.defined()) pred_x0.push_back(o.pred_original_sample);
    else has_x0 = false;
  }
  cmp.compare("scaled_model_inputs", at::stack(scaled), need(file, "scaled_model_inputs"));
  cmp.compare("prev_samples", at::stack(prev), need(file, "prev_samples"));
  if (c.expected.contains("pred_original_samples")) {
    if (!has_x0) cmp.fail("pred_original_samples: the scheduler does not return pred_original_sample");
    else cmp.compare("pred_original_samples", at::stack(pred_x0), need(file, "pred_original_samples"));
  }

  if (c.expected.contains("noised")) {
    SchedulerPtr fresh = make_set(cls, config, n, opts);
    at::Tensor original = need(file, "noise_original"), noise = need(file, "noise_noise");
    at::Tensor t = need(file, "noise_timestep");
    const std::string api = p.value("noise_api", std::string("add_noise"));
    at::Tensor noised = api.rfind("scale_noise", 0) == 0 ? fresh->scale_noise(original, t, noise)
                                                         : fresh->add_noise(original, noise, t);
    cmp.compare("noised", noised, need(file, "noised"));
  }
  return cmp.result();
}

}  // namespace tessera
