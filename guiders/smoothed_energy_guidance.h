#pragma once
/// Smoothed Energy Guidance (Hong 2024), as diffusers.guiders.SmoothedEnergyGuidance: a third pass on the
/// conditional inputs with the self-attention queries of the chosen layers blurred by a 2-D Gaussian over the
/// (square) token grid, combined as in LayerPerturbationGuidance (identifier pred_cond_seg).
/// Fixes over diffusers 0.40 (documented in docs/guiders.md):
///  - diffusers never applies the blur: its prepare_models does not count passes, so the hook condition
///    (`_count_prepared > 1`) is never true and pred_cond_seg is an unperturbed prediction. Here the SEG pass
///    always carries its SmoothedEnergyBlur hook.
///  - diffusers' _gaussian_blur_2d swaps its branches (sigma above the "infinite" threshold convolves, a finite
///    sigma takes the mean). Here, as in the SEG paper's code, sigma > seg_blur_threshold_inf means infinite blur
///    (every query = the mean query) and a finite sigma convolves with a Gaussian kernel.
///  - diffusers' hook ignores seg_blur_threshold_inf (it uses its own default); here the configured value is used.
#include "guiders/layer_perturbation_guidance.h"

namespace tessera {

/// SEG. Config: guidance_scale 7.5, seg_guidance_scale 2.8, seg_blur_sigma 9999999, seg_blur_threshold_inf 9999,
/// seg_guidance_start 0, seg_guidance_stop 1, seg_guidance_layers (int | list) or seg_guidance_config
/// ({indices, fqn} or a list), guidance_rescale 0, use_original_formulation false, start 0, stop 1, enabled.
class SmoothedEnergyGuidance : public LayerPerturbationGuidance {
 public:
  explicit SmoothedEnergyGuidance(GuiderConfigReader& config);
  std::string type() const override { return "SmoothedEnergyGuidance"; }
};

/// Blurs the queries of the first floor(sqrt(N))^2 tokens of `query` [B, N, C] as a square image: the mean
/// (sigma > threshold_inf) or a Gaussian of std `sigma` with reflect padding (kernel clipped to the grid).
at::Tensor smoothed_energy_blur(const at::Tensor& query, double sigma, double threshold_inf);

}  // namespace tessera
