#include "guiders/tangential_classifier_free_guidance.h"

namespace tessera {

at::Tensor tangential_guidance(const at::Tensor& pred_cond, const at::Tensor& pred_uncond, double guidance_scale,
                               bool use_original_formulation) {
  const auto cond_dtype = pred_cond.scalar_type();
  at::Tensor preds = at::stack({pred_cond, pred_uncond}, 1).to(at::kFloat).flatten(2);  // [B, 2, N]
  auto [U, S, Vh] = at::linalg_svd(preds, /*full_matrices=*/false);                      // Vh [B, 2, N]
  at::Tensor Vh_modified = Vh.clone();
  Vh_modified.select(1, 1).zero_();  // keep only the dominant direction

  at::Tensor uncond_flat = pred_uncond.reshape({pred_uncond.size(0), 1, -1}).to(at::kFloat);  // [B, 1, N]
  at::Tensor x_Vh = at::matmul(uncond_flat, Vh.transpose(-2, -1));                           // [B, 1, 2]
  at::Tensor x_Vh_V = at::matmul(x_Vh, Vh_modified);                                          // [B, 1, N]
  at::Tensor projected_uncond = x_Vh_V.reshape(pred_uncond.sizes()).to(cond_dtype);

  const at::Tensor& base = use_original_formulation ? pred_cond : projected_uncond;
  return base + guidance_scale * (pred_cond - projected_uncond);
}

GuiderOutput TangentialClassifierFreeGuidance::forward(const std::map<std::string, at::Tensor>& preds) {
  const at::Tensor& pred_cond = require_pred(preds, "pred_cond", type());
  if (!is_cfg_enabled()) return {maybe_rescale(pred_cond, pred_cond), pred_cond, {}};
  const at::Tensor& pred_uncond = require_pred(preds, "pred_uncond", type());
  at::Tensor pred = tangential_guidance(pred_cond, pred_uncond, guidance_scale_, use_original_formulation_);
  return {maybe_rescale(pred, pred_cond), pred_cond, pred_uncond};
}

}  // namespace tessera
