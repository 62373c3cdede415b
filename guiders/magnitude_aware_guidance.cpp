#include "guiders/magnitude_aware_guidance.h"

#include "guiders/guider_config.h"

namespace tessera {

MagnitudeAwareGuidance::MagnitudeAwareGuidance(GuiderConfigReader& config)
    : Guider(config, /*default_guidance_scale=*/10.0), alpha_(config.get_float("alpha", 8.0)) {}

at::Tensor mambo_guidance(const at::Tensor& pred_cond, const at::Tensor& pred_uncond, double guidance_scale,
                          double alpha, bool use_original_formulation) {
  std::vector<int64_t> dim;
  for (int64_t d = 1; d < pred_cond.dim(); ++d) dim.push_back(d);
  at::Tensor diff = pred_cond - pred_uncond;
  at::Tensor ratio = at::norm(diff, 2, dim, /*keepdim=*/true) / at::norm(pred_uncond, 2, dim, /*keepdim=*/true);
  at::Tensor scale = use_original_formulation ? guidance_scale * at::exp(-alpha * ratio)
                                              : 1.0 + (guidance_scale - 1.0) * at::exp(-alpha * ratio);
  const at::Tensor& base = use_original_formulation ? pred_cond : pred_uncond;
  return base + scale * diff;
}

GuiderOutput MagnitudeAwareGuidance::forward(const std::map<std::string, at::Tensor>& preds) {
  const at::Tensor& pred_cond = require_pred(preds, "pred_cond", type());
  if (!is_cfg_enabled()) return {maybe_rescale(pred_cond, pred_cond), pred_cond, {}};
  const at::Tensor& pred_uncond = require_pred(preds, "pred_uncond", type());
  at::Tensor pred = mambo_guidance(pred_cond, pred_uncond, guidance_scale_, alpha_, use_original_formulation_);
  return {maybe_rescale(pred, pred_cond), pred_cond, pred_uncond};
}

}  // namespace tessera
