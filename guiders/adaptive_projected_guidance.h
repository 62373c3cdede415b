#pragma once
/// Adaptive Projected Guidance (Sadat et al. 2024), as diffusers.guiders.AdaptiveProjectedGuidance: the CFG
/// update (pred_cond - pred_uncond) is averaged with momentum, its norm clipped to a threshold, and its component
/// parallel to pred_cond scaled by eta.
#include <optional>

#include "guiders/guider.h"

namespace tessera {

/// Running average of the guidance update: avg = update + momentum * avg (starts at 0). Reset at step 0.
class MomentumBuffer {
 public:
  explicit MomentumBuffer(double momentum) : momentum_(momentum) {}
  void update(const at::Tensor& update_value);
  const at::Tensor& running_average() const { return running_average_; }

 private:
  double momentum_;
  at::Tensor running_average_;  ///< undefined = 0
};

/// diffusers' APG normalized_guidance. `norm_dim` empty = every dim but the batch (counted from the end, as there).
/// The projection on pred_cond is computed in float64, as diffusers does.
at::Tensor normalized_guidance(const at::Tensor& pred_cond, const at::Tensor& pred_uncond, double guidance_scale,
                               MomentumBuffer* momentum_buffer, double eta, double norm_threshold,
                               bool use_original_formulation, const std::vector<int64_t>& norm_dim = {});

/// APG. Config: guidance_scale 7.5, adaptive_projected_guidance_momentum null, adaptive_projected_guidance_rescale
/// 15 (the norm threshold), adaptive_projected_guidance_norm_dim null, eta 1, guidance_rescale 0,
/// use_original_formulation false, start 0, stop 1, enabled.
class AdaptiveProjectedGuidance : public Guider {
 public:
  explicit AdaptiveProjectedGuidance(GuiderConfigReader& config);
  std::string type() const override { return "AdaptiveProjectedGuidance"; }
  int64_t num_conditions() const override { return is_cfg_enabled() ? 2 : 1; }
  GuiderOutput forward(const std::map<std::string, at::Tensor>& preds) override;

 protected:
  void on_prepare_inputs() override;

 private:
  std::optional<double> momentum_;
  double norm_threshold_;
  std::vector<int64_t> norm_dim_;
  double eta_;
  std::optional<MomentumBuffer> momentum_buffer_;
};

}  // namespace tessera
