#include "guiders/classifier_free_guidance.h"

namespace tessera {

GuiderOutput ClassifierFreeGuidance::forward(const std::map<std::string, at::Tensor>& preds) {
  const at::Tensor& pred_cond = require_pred(preds, "pred_cond", type());
  if (!is_cfg_enabled()) return {maybe_rescale(pred_cond, pred_cond), pred_cond, {}};
  const at::Tensor& pred_uncond = require_pred(preds, "pred_uncond", type());
  at::Tensor pred = cfg_combine(pred_cond, pred_uncond, guidance_scale_);
  return {maybe_rescale(pred, pred_cond), pred_cond, pred_uncond};
}

}  // namespace tessera
