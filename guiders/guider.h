#pragma once
/// Guiders: combine the denoiser's predictions for several passes (conditional, unconditional, perturbed…) into
/// one guided prediction, as diffusers.guiders does. Protocol (ARCHITECTURE.md §5), once per denoising step:
///   guider.set_state(i, T, t);
///   auto passes = guider.prepare_inputs({{"encoder_hidden_states", {cond_embeds, uncond_embeds}},
///                                        {"latents", {latents, {}}}});
///   auto preds = run_passes(passes, model_fn);          // one batched model call by default
///   at::Tensor noise_pred = guider.forward(preds).pred;
/// `guide(guider, fields, model_fn)` does the last three lines.
#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tessera/components.h"
#include "guiders/layer_hooks.h"

namespace tessera {

class GuiderConfigReader;

/// Per-field inputs of one step: field name → (conditional tensor, unconditional tensor). An undefined
/// unconditional tensor means the field is not conditioned (e.g. latents): every pass gets the first tensor.
using GuiderFields = std::map<std::string, std::pair<at::Tensor, at::Tensor>>;

/// One model evaluation a guider needs in this step.
struct GuiderPass {
  std::string identifier;                      ///< "pred_cond", "pred_uncond", "pred_cond_skip", "pred_cond_seg"
  std::map<std::string, at::Tensor> inputs;    ///< field name → tensor for this pass
  std::vector<LayerHook> hooks;                ///< layers to perturb for this pass (batch slice set by run_passes)
  /// Identifiers whose prediction equals this pass's (a pass with the same inputs and no hooks was folded in).
  std::vector<std::string> also;
};

/// What `forward` returns (diffusers' GuiderOutput).
struct GuiderOutput {
  at::Tensor pred;
  at::Tensor pred_cond;
  at::Tensor pred_uncond;  ///< undefined when the step had no unconditional pass
};

/// Base of all guiders. Holds the settings every diffusers guider has (guidance_scale, guidance_rescale,
/// use_original_formulation, start, stop, enabled) and the step state.
class Guider : public Component {
 public:
  /// Settings read from a config; each subclass reads its own fields after these.
  explicit Guider(GuiderConfigReader& config, double default_guidance_scale = 7.5);

  /// Step `step` of `num_inference_steps`, at `timestep` (may be undefined).
  virtual void set_state(int64_t step, int64_t num_inference_steps, at::Tensor timestep);
  /// The passes of this step; their number is num_conditions() minus passes folded into an identical one.
  virtual std::vector<GuiderPass> prepare_inputs(const GuiderFields& fields);
  /// How many predictions forward() combines at this step (changes with the step: start/stop windows).
  virtual int64_t num_conditions() const = 0;
  /// Combines the predictions of this step's passes, keyed by identifier.
  virtual GuiderOutput forward(const std::map<std::string, at::Tensor>& preds) = 0;

  bool is_enabled() const { return enabled_; }
  void enable() { enabled_ = true; }
  void disable() { enabled_ = false; }
  int64_t step() const { return step_; }
  int64_t num_inference_steps() const { return num_inference_steps_; }
  const at::Tensor& timestep() const { return timestep_; }

  /// The effective configuration (diffusers' field names, defaults filled in), as guider_config.json holds it.
  const nlohmann::json& config() const { return config_; }
  /// Records the effective configuration; make_guider calls it once the reader has checked every field.
  void set_config_record(nlohmann::json config) { config_ = std::move(config); }

  double guidance_scale() const { return guidance_scale_; }
  /// Overrides the scale for the steps that follow (a pipeline's `guidance_scale` input, as diffusers' standard
  /// pipelines take it); `set_guidance_scale(std::nullopt)` restores the configured value.
  void set_guidance_scale(std::optional<double> scale) { guidance_scale_ = scale ? *scale : configured_guidance_scale_; }
  /// The same for guidance_rescale (the standard pipelines' `guidance_rescale` argument).
  void set_guidance_rescale(std::optional<double> r) { guidance_rescale_ = r ? *r : configured_guidance_rescale_; }
  double guidance_rescale() const { return guidance_rescale_; }
  bool use_original_formulation() const { return use_original_formulation_; }
  double start() const { return start_; }
  double stop() const { return stop_; }

 protected:
  /// One pass of the plan: identifier, which tuple element of each field it reads (0 cond, 1 uncond), hooks.
  struct PassPlan {
    std::string identifier;
    int tuple_index = 0;
    std::vector<LayerHook> hooks;
  };
  /// The passes this step needs, in diffusers' order.
  virtual std::vector<PassPlan> plan() const;
  /// Called by prepare_inputs before planning (APG resets its momentum at step 0 here, as diffusers does).
  virtual void on_prepare_inputs() {}

  /// diffusers' `_is_cfg_enabled`: enabled, start*T <= step < stop*T, and the scale is not the no-op value.
  bool is_cfg_enabled() const;
  /// Whether `step` lies in the window [int(a*T), int(b*T)) (or (…) with `exclusive_start`); true before set_state.
  bool in_window(double a, double b, bool exclusive_start) const;
  /// pred_uncond + scale*(pred_cond - pred_uncond), or pred_cond + … with use_original_formulation.
  at::Tensor cfg_combine(const at::Tensor& pred_cond, const at::Tensor& pred_uncond, double scale) const;
  /// Applies guidance_rescale when > 0.
  at::Tensor maybe_rescale(const at::Tensor& pred, const at::Tensor& pred_cond) const;

  double guidance_scale_;
  double configured_guidance_scale_;
  double guidance_rescale_;
  double configured_guidance_rescale_;
  bool use_original_formulation_;
  double start_;
  double stop_;
  bool enabled_;
  int64_t step_ = -1;                 ///< -1 until set_state
  int64_t num_inference_steps_ = -1;  ///< -1 until set_state
  at::Tensor timestep_;
  nlohmann::json config_;
};
using GuiderPtr = std::shared_ptr<Guider>;

/// The prediction `preds[identifier]`; ExecutionError naming the guider and the identifier when absent.
const at::Tensor& require_pred(const std::map<std::string, at::Tensor>& preds, const std::string& identifier,
                               const std::string& guider_type);

/// Python's math.isclose(a, b) with its default tolerances (rel 1e-9, abs 0), as diffusers uses it.
bool is_close(double a, double b);

/// diffusers' rescale_noise_cfg (Lin et al. 2023, §3.4): matches the std of `noise_cfg` to `noise_pred_text`.
at::Tensor rescale_noise_cfg(const at::Tensor& noise_cfg, const at::Tensor& noise_pred_text, double guidance_rescale);

/// A denoiser call: per-field inputs (batch along dim 0) and the layer hooks to honour → prediction whose dim 0
/// is the batch of the inputs.
using GuiderModelFn =
    std::function<at::Tensor(const std::map<std::string, at::Tensor>& inputs, const std::vector<LayerHook>& hooks)>;

/// Runs the passes and returns their predictions by identifier (including the folded `also` identifiers).
/// batch_passes (default): one call with every field concatenated along dim 0 in pass order, each hook's batch
/// slice set to its pass's rows; 0-dim fields (a scalar timestep) must be the same in every pass and are passed
/// once. batch_passes false: one call per pass (diffusers' order), hooks covering the whole call.
std::map<std::string, at::Tensor> run_passes(const std::vector<GuiderPass>& passes, const GuiderModelFn& model,
                                             bool batch_passes = true);

/// prepare_inputs → run_passes → forward, for one step whose state is already set.
GuiderOutput guide(Guider& guider, const GuiderFields& fields, const GuiderModelFn& model, bool batch_passes = true);

}  // namespace tessera
