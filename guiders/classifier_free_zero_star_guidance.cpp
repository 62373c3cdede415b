#include "guiders/classifier_free_zero_star_guidance.h"

#include "guiders/guider_config.h"

namespace tessera {

ClassifierFreeZeroStarGuidance::ClassifierFreeZeroStarGuidance(GuiderConfigReader& config)
    : Guider(config), zero_init_steps_(config.get_int("zero_init_steps", 1)) {}

at::Tensor cfg_zero_star_scale(const at::Tensor& cond, const at::Tensor& uncond, double eps) {
  at::Tensor c = cond.to(at::kFloat);
  at::Tensor u = uncond.to(at::kFloat);
  at::Tensor dot_product = (c * u).sum(1, /*keepdim=*/true);
  at::Tensor squared_norm = u.pow(2).sum(1, /*keepdim=*/true) + eps;
  return (dot_product / squared_norm).to(cond.scalar_type());
}

GuiderOutput ClassifierFreeZeroStarGuidance::forward(const std::map<std::string, at::Tensor>& preds) {
  const at::Tensor& pred_cond = require_pred(preds, "pred_cond", type());
  at::Tensor pred_uncond = preds.count("pred_uncond") ? preds.at("pred_uncond") : at::Tensor();
  at::Tensor pred;
  if (!enabled_) {
    pred = pred_cond;
  } else if (step_ >= 0 && step_ < zero_init_steps_) {
    // Zero init applies even outside the CFG window, as in diffusers (the check comes first there too).
    pred = at::zeros_like(pred_cond);
  } else if (!is_cfg_enabled()) {
    pred = pred_cond;
  } else {
    pred_uncond = require_pred(preds, "pred_uncond", type());
    at::Tensor alpha = cfg_zero_star_scale(pred_cond.flatten(1), pred_uncond.flatten(1));
    std::vector<int64_t> shape(static_cast<size_t>(pred_cond.dim()), 1);
    shape[0] = -1;
    pred_uncond = pred_uncond * alpha.view(shape);
    pred = cfg_combine(pred_cond, pred_uncond, guidance_scale_);
  }
  return {maybe_rescale(pred, pred_cond), pred_cond, pred_uncond};
}

}  // namespace tessera
