#include "guiders/adaptive_projected_mix_guidance.h"

#include "guiders/guider_config.h"

namespace tessera {

AdaptiveProjectedMixGuidance::AdaptiveProjectedMixGuidance(GuiderConfigReader& config)
    : Guider(config, /*default_guidance_scale=*/3.5),
      apg_scale_(config.get_float("adaptive_projected_guidance_scale", 10.0)),
      momentum_(config.get_optional_float("adaptive_projected_guidance_momentum", -0.5)),
      norm_threshold_(config.get_float("adaptive_projected_guidance_rescale", 10.0)),
      eta_(config.get_float("eta", 0.0)),
      apg_start_step_(config.get_int("adaptive_projected_guidance_start_step", 5)) {}

void AdaptiveProjectedMixGuidance::on_prepare_inputs() {
  if (step_ == 0 && momentum_) momentum_buffer_.emplace(*momentum_);
}

bool AdaptiveProjectedMixGuidance::is_apg_enabled() const {
  if (!is_cfg_enabled()) return false;
  const bool is_noop = use_original_formulation_ ? is_close(apg_scale_, 0.0) : is_close(apg_scale_, 1.0);
  return step_ >= 0 && step_ > apg_start_step_ && !is_noop;
}

GuiderOutput AdaptiveProjectedMixGuidance::forward(const std::map<std::string, at::Tensor>& preds) {
  const at::Tensor& pred_cond = require_pred(preds, "pred_cond", type());
  if (!is_cfg_enabled()) return {maybe_rescale(pred_cond, pred_cond), pred_cond, {}};
  const at::Tensor& pred_uncond = require_pred(preds, "pred_uncond", type());
  MomentumBuffer* buffer = momentum_buffer_ ? &*momentum_buffer_ : nullptr;
  at::Tensor pred;
  if (!is_apg_enabled()) {
    if (buffer) buffer->update(pred_cond - pred_uncond);  // keeps the average warm for the APG steps
    pred = cfg_combine(pred_cond, pred_uncond, guidance_scale_);
  } else {
    pred = normalized_guidance(pred_cond, pred_uncond, apg_scale_, buffer, eta_, norm_threshold_,
                               use_original_formulation_);
  }
  return {maybe_rescale(pred, pred_cond), pred_cond, pred_uncond};
}

}  // namespace tessera
