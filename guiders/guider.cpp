#include "guiders/guider.h"

#include <cmath>

#include "tessera/error.h"
#include "guiders/guider_config.h"

namespace tessera {

Guider::Guider(GuiderConfigReader& config, double default_guidance_scale)
    : guidance_scale_(config.get_float("guidance_scale", default_guidance_scale)),
      configured_guidance_scale_(guidance_scale_),
      guidance_rescale_(config.get_float("guidance_rescale", 0.0)),
      configured_guidance_rescale_(guidance_rescale_),
      use_original_formulation_(config.get_bool("use_original_formulation", false)),
      start_(config.get_float("start", 0.0)),
      stop_(config.get_float("stop", 1.0)),
      enabled_(config.get_bool("enabled", true)) {
  if (!(0.0 <= start_ && start_ < 1.0))
    throw ValidationError(config.type() + ": `start` must be in [0, 1), got " + std::to_string(start_));
  if (!(start_ <= stop_ && stop_ <= 1.0))
    throw ValidationError(config.type() + ": `stop` must be in [start, 1], got " + std::to_string(stop_));
}

void Guider::set_state(int64_t step, int64_t num_inference_steps, at::Tensor timestep) {
  if (step < 0 || num_inference_steps <= 0)
    throw ExecutionError(type() + ".set_state: step " + std::to_string(step) + " of " +
                         std::to_string(num_inference_steps) + " steps is not a step");
  step_ = step;
  num_inference_steps_ = num_inference_steps;
  timestep_ = std::move(timestep);
}

std::vector<Guider::PassPlan> Guider::plan() const {
  std::vector<PassPlan> out{{"pred_cond", 0, {}}};
  if (num_conditions() > 1) out.push_back({"pred_uncond", 1, {}});
  return out;
}

namespace {

/// The same tensor object, or a view of the same memory with the same layout: its prediction would be the same.
bool same_tensor(const at::Tensor& a, const at::Tensor& b) {
  if (a.is_same(b)) return true;
  if (!a.defined() || !b.defined()) return false;
  return a.data_ptr() == b.data_ptr() && a.sizes() == b.sizes() && a.strides() == b.strides() &&
         a.scalar_type() == b.scalar_type() && a.device() == b.device();
}

bool same_inputs(const std::map<std::string, at::Tensor>& a, const std::map<std::string, at::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (const auto& [name, t] : a) {
    auto it = b.find(name);
    if (it == b.end() || !same_tensor(t, it->second)) return false;
  }
  return true;
}

}  // namespace

std::vector<GuiderPass> Guider::prepare_inputs(const GuiderFields& fields) {
  on_prepare_inputs();
  std::vector<GuiderPass> passes;
  for (PassPlan& p : plan()) {
    GuiderPass pass{p.identifier, {}, std::move(p.hooks), {}};
    for (const auto& [name, pair] : fields) {
      if (!pair.first.defined())
        throw ExecutionError(type() + ".prepare_inputs: field '" + name + "' has no conditional tensor");
      pass.inputs[name] = (p.tuple_index == 1 && pair.second.defined()) ? pair.second : pair.first;
    }
    // A pass with the inputs of an earlier unhooked pass and no hooks of its own predicts the same thing
    // (e.g. CFG whose negative embeddings are the positive ones): run it once.
    bool folded = false;
    if (pass.hooks.empty()) {
      for (GuiderPass& earlier : passes) {
        if (earlier.hooks.empty() && same_inputs(earlier.inputs, pass.inputs)) {
          earlier.also.push_back(pass.identifier);
          folded = true;
          break;
        }
      }
    }
    if (!folded) passes.push_back(std::move(pass));
  }
  return passes;
}

bool Guider::in_window(double a, double b, bool exclusive_start) const {
  if (num_inference_steps_ < 0) return true;
  // Python's int() of a non-negative float, as diffusers computes the window.
  const auto first = static_cast<int64_t>(a * static_cast<double>(num_inference_steps_));
  const auto last = static_cast<int64_t>(b * static_cast<double>(num_inference_steps_));
  const bool after_start = exclusive_start ? first < step_ : first <= step_;
  return after_start && step_ < last;
}

bool Guider::is_cfg_enabled() const {
  if (!enabled_) return false;
  const bool is_noop = use_original_formulation_ ? is_close(guidance_scale_, 0.0) : is_close(guidance_scale_, 1.0);
  return in_window(start_, stop_, false) && !is_noop;
}

at::Tensor Guider::cfg_combine(const at::Tensor& pred_cond, const at::Tensor& pred_uncond, double scale) const {
  at::Tensor shift = pred_cond - pred_uncond;
  const at::Tensor& base = use_original_formulation_ ? pred_cond : pred_uncond;
  return base + scale * shift;
}

at::Tensor Guider::maybe_rescale(const at::Tensor& pred, const at::Tensor& pred_cond) const {
  if (guidance_rescale_ > 0.0) return rescale_noise_cfg(pred, pred_cond, guidance_rescale_);
  return pred;
}

const at::Tensor& require_pred(const std::map<std::string, at::Tensor>& preds, const std::string& identifier,
                               const std::string& guider_type) {
  auto it = preds.find(identifier);
  if (it == preds.end() || !it->second.defined()) {
    std::string have;
    for (const auto& [k, v] : preds) have += (have.empty() ? "" : ", ") + k;
    throw ExecutionError(guider_type + ".forward needs the prediction '" + identifier + "' at this step; got {" +
                         have + "}");
  }
  return it->second;
}

bool is_close(double a, double b) {
  if (a == b) return true;
  const double diff = std::fabs(a - b);
  return diff <= 1e-9 * std::fabs(b) || diff <= 1e-9 * std::fabs(a);
}

at::Tensor rescale_noise_cfg(const at::Tensor& noise_cfg, const at::Tensor& noise_pred_text, double guidance_rescale) {
  std::vector<int64_t> dims;
  for (int64_t d = 1; d < noise_pred_text.dim(); ++d) dims.push_back(d);
  at::Tensor std_text = noise_pred_text.std(dims, /*unbiased=*/true, /*keepdim=*/true);
  at::Tensor std_cfg = noise_cfg.std(dims, /*unbiased=*/true, /*keepdim=*/true);
  at::Tensor rescaled = noise_cfg * (std_text / std_cfg);
  return guidance_rescale * rescaled + (1 - guidance_rescale) * noise_cfg;
}

namespace {

int64_t pass_batch_size(const GuiderPass& pass) {
  for (const auto& [name, t] : pass.inputs)
    if (t.dim() > 0) return t.size(0);
  throw ExecutionError("guider pass '" + pass.identifier + "' has no batched input (every field is a scalar)");
}

std::vector<LayerHook> hooks_at(const GuiderPass& pass, int64_t offset, int64_t size) {
  std::vector<LayerHook> out = pass.hooks;
  for (LayerHook& h : out) {
    h.batch_size = h.batch_size < 0 ? size - h.batch_start : h.batch_size;
    h.batch_start += offset;
  }
  return out;
}

void store(std::map<std::string, at::Tensor>& preds, const GuiderPass& pass, const at::Tensor& pred) {
  preds[pass.identifier] = pred;
  for (const std::string& id : pass.also) preds[id] = pred;
}

}  // namespace

std::map<std::string, at::Tensor> run_passes(const std::vector<GuiderPass>& passes, const GuiderModelFn& model,
                                             bool batch_passes) {
  std::map<std::string, at::Tensor> preds;
  if (passes.empty()) return preds;
  if (!batch_passes || passes.size() == 1) {
    for (const GuiderPass& pass : passes) {
      const int64_t n = pass_batch_size(pass);
      at::Tensor pred = model(pass.inputs, hooks_at(pass, 0, n));
      if (pred.dim() == 0 || pred.size(0) != n)
        throw ExecutionError("model returned batch " + (pred.dim() ? std::to_string(pred.size(0)) : "scalar") +
                             " for guider pass '" + pass.identifier + "' of batch " + std::to_string(n));
      store(preds, pass, pred);
    }
    return preds;
  }

  std::vector<int64_t> sizes;
  std::vector<LayerHook> hooks;
  int64_t total = 0;
  for (const GuiderPass& pass : passes) {
    if (pass.inputs.size() != passes.front().inputs.size())
      throw ExecutionError("guider passes '" + passes.front().identifier + "' and '" + pass.identifier +
                           "' have different input fields");
    sizes.push_back(pass_batch_size(pass));
    for (LayerHook& h : hooks_at(pass, total, sizes.back())) hooks.push_back(std::move(h));
    total += sizes.back();
  }
  std::map<std::string, at::Tensor> batched;
  for (const auto& [name, first] : passes.front().inputs) {
    std::vector<at::Tensor> parts;
    for (const GuiderPass& pass : passes) {
      auto it = pass.inputs.find(name);
      if (it == pass.inputs.end())
        throw ExecutionError("guider pass '" + pass.identifier + "' lacks input field '" + name + "'");
      parts.push_back(it->second);
    }
    if (first.dim() == 0) {
      // A scalar (one timestep for the whole batch) is shared, not stacked; passes must agree on it.
      for (const at::Tensor& t : parts)
        if (t.dim() != 0 || !(same_tensor(t, first) || at::equal(t, first)))
          throw ExecutionError("input field '" + name + "' is a scalar that differs between guider passes");
      batched[name] = first;
    } else {
      batched[name] = at::cat(parts, 0);
    }
  }
  at::Tensor pred = model(batched, hooks);
  if (pred.dim() == 0 || pred.size(0) != total)
    throw ExecutionError("model returned batch " + (pred.dim() ? std::to_string(pred.size(0)) : "scalar") +
                         " for " + std::to_string(passes.size()) + " batched guider passes of batch " +
                         std::to_string(total));
  int64_t offset = 0;
  for (size_t k = 0; k < passes.size(); ++k) {
    store(preds, passes[k], pred.narrow(0, offset, sizes[k]));
    offset += sizes[k];
  }
  return preds;
}

GuiderOutput guide(Guider& guider, const GuiderFields& fields, const GuiderModelFn& model, bool batch_passes) {
  return guider.forward(run_passes(guider.prepare_inputs(fields), model, batch_passes));
}

}  // namespace tessera
