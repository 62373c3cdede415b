#include "guiders/adaptive_projected_guidance.h"

#include "guiders/guider_config.h"

namespace tessera {

void MomentumBuffer::update(const at::Tensor& update_value) {
  // First update: update + momentum * 0 == update exactly, so no zeros tensor is needed.
  running_average_ = running_average_.defined() ? update_value + momentum_ * running_average_ : update_value;
}

at::Tensor normalized_guidance(const at::Tensor& pred_cond, const at::Tensor& pred_uncond, double guidance_scale,
                               MomentumBuffer* momentum_buffer, double eta, double norm_threshold,
                               bool use_original_formulation, const std::vector<int64_t>& norm_dim) {
  at::Tensor diff = pred_cond - pred_uncond;
  std::vector<int64_t> dim = norm_dim;
  if (dim.empty())
    for (int64_t i = 1; i < diff.dim(); ++i) dim.push_back(-i);

  if (momentum_buffer) {
    momentum_buffer->update(diff);
    diff = momentum_buffer->running_average();
  }
  if (norm_threshold > 0) {
    at::Tensor diff_norm = at::norm(diff, 2, dim, /*keepdim=*/true);
    at::Tensor scale_factor = at::minimum(at::ones_like(diff), norm_threshold / diff_norm);
    diff = diff * scale_factor;
  }
  at::Tensor v0 = diff.to(at::kDouble);
  at::Tensor v1 = pred_cond.to(at::kDouble);
  // F.normalize: x / max(|x|, 1e-12)
  v1 = v1 / at::norm(v1, 2, dim, /*keepdim=*/true).clamp_min(1e-12).expand_as(v1);
  at::Tensor v0_parallel = (v0 * v1).sum(dim, /*keepdim=*/true) * v1;
  at::Tensor v0_orthogonal = v0 - v0_parallel;
  at::Tensor diff_parallel = v0_parallel.to(diff.options());
  at::Tensor diff_orthogonal = v0_orthogonal.to(diff.options());
  at::Tensor normalized_update = diff_orthogonal + eta * diff_parallel;

  const at::Tensor& base = use_original_formulation ? pred_cond : pred_uncond;
  return base + guidance_scale * normalized_update;
}

AdaptiveProjectedGuidance::AdaptiveProjectedGuidance(GuiderConfigReader& config)
    : Guider(config),
      momentum_(config.get_optional_float("adaptive_projected_guidance_momentum", std::nullopt)),
      norm_threshold_(config.get_float("adaptive_projected_guidance_rescale", 15.0)),
      norm_dim_(config.get_int_list("adaptive_projected_guidance_norm_dim").value_or(std::vector<int64_t>{})),
      eta_(config.get_float("eta", 1.0)) {}

void AdaptiveProjectedGuidance::on_prepare_inputs() {
  if (step_ == 0 && momentum_) momentum_buffer_.emplace(*momentum_);
}

GuiderOutput AdaptiveProjectedGuidance::forward(const std::map<std::string, at::Tensor>& preds) {
  const at::Tensor& pred_cond = require_pred(preds, "pred_cond", type());
  if (!is_cfg_enabled()) return {maybe_rescale(pred_cond, pred_cond), pred_cond, {}};
  const at::Tensor& pred_uncond = require_pred(preds, "pred_uncond", type());
  at::Tensor pred = normalized_guidance(pred_cond, pred_uncond, guidance_scale_,
                                        momentum_buffer_ ? &*momentum_buffer_ : nullptr, eta_, norm_threshold_,
                                        use_original_formulation_, norm_dim_);
  return {maybe_rescale(pred, pred_cond), pred_cond, pred_uncond};
}

}  // namespace tessera
