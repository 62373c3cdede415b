#pragma once
/// common.* blocks that run inside the denoising loop.
#include "tessera/block.h"

namespace tessera {

/// common.diffuse_step: one explicit step of the heat equation, latents += rate · ∇²latents (5-point
/// Laplacian over H and W, replicate padding at the borders). Each step damps a spatial frequency by
/// (1 - 4·rate·(sin²(ωx/2) + sin²(ωy/2))), so high frequencies fade fastest: a model-free "denoiser"
/// that turns noise into smooth structure. It has the interface of a denoising step (latents, t, i) and
/// is time-independent; rate ≤ 0.25 keeps the explicit scheme stable.
///
///   - name: denoise
///     loop: {over: timesteps, index: i, value: t}
///     blocks: [{name: step, block: common.diffuse_step, params: {rate: 0.2}}]
class DiffuseStep final : public LeafBlock {
 public:
  static constexpr const char* kId = "common.diffuse_step";
  static constexpr const char* kDescription =
      "One heat-equation step latents += rate * laplacian(latents) (replicate padding): removes high frequencies";

  static inline const InputParam latents{"latents", Kind::Tensor, "Latents [B, C, H, W] (floating point)", true};
  static inline const InputParam t{"t", Kind::Any, "Loop variable: the current timestep (not used by the heat step)"};
  static inline const InputParam i{"i", Kind::Int, "Loop variable: the step index (not used by the heat step)"};
  static inline const OutputParam latents_out{"latents", Kind::Tensor, "Smoothed latents [B, C, H, W]"};
  /// Construction param.
  static inline const InputParam rate{"rate", Kind::Float, "Diffusion rate per step, in [0, 0.25] (stability)",
                                      false, Value(0.2)};
  static std::vector<InputParam> params() { return {rate}; }

  explicit DiffuseStep(const ValueMap& params = {});
  BlockSpec spec() const override;
  void run(Components& components, BlockState& state) const override;

  /// The step itself, for callers outside a pipeline: x + rate · ∇²x for x [B, C, H, W].
  static at::Tensor heat_step(const at::Tensor& x, double rate);

 private:
  double rate_;
};

}  // namespace tessera
