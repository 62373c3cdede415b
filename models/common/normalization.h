#pragma once
/// Normalisation layers of diffusers' models/normalization.py used by the DiT families (FLUX, SD3/SD3.5):
/// RMSNorm (diffusers' own and torch.nn.RMSNorm's arithmetic), AdaLayerNormZero, AdaLayerNormZeroSingle,
/// SD35AdaLayerNormZeroX and AdaLayerNormContinuous. Submodules carry diffusers' state-dict keys (`linear`,
/// `norm`; RMSNorm's `weight`).
///
/// Chunk orders (the classic pitfall): the AdaLayerNormZero family splits its projection into
/// shift, scale, gate[, shift_mlp, scale_mlp, gate_mlp[, shift_msa2, scale_msa2, gate_msa2]];
/// AdaLayerNormContinuous splits into **scale, shift**.
///
///   AdaLayerNormZero norm1(dim);
///   auto o = norm1(x, temb);                 // o.hidden_states [B, L, D]; o.gate_msa [B, D] …
///   RMSNorm qn(RMSNormOptions(head_dim).eps(1e-6).flavor(RMSNormFlavor::Torch));
///
/// Precision: in a bfloat16 model the LayerNorms run in float32 (layer_norm_fp32, models/common/precision.h);
/// RMSNorm computes its statistics in float32 by definition (see RMSNormFlavor).
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cstdint>

namespace tessera {

/// Which RMSNorm arithmetic to follow (they differ only for reduced-precision inputs or weights).
enum class RMSNormFlavor {
  /// diffusers' RMSNorm: variance of x in float32, x * rsqrt(var + eps) (promoted to float32), cast to the
  /// weight's dtype when that is float16/bfloat16, then * weight. Without weight: cast back to x's dtype.
  Diffusers,
  /// torch.nn.RMSNorm's composite: x upcast to float32, x * rsqrt(mean(x²) + eps) * weight in float32, cast to
  /// x's dtype once at the end.
  Torch,
};

struct RMSNormOptions {
  explicit RMSNormOptions(int64_t dim) : dim_(dim) {}
  TORCH_ARG(int64_t, dim);
  TORCH_ARG(double, eps) = 1e-6;
  TORCH_ARG(bool, elementwise_affine) = true;
  TORCH_ARG(RMSNormFlavor, flavor) = RMSNormFlavor::Diffusers;
};

/// RMS normalisation over the last dimension; parameter `weight` [dim] when elementwise_affine.
class RMSNormImpl : public torch::nn::Module {
 public:
  explicit RMSNormImpl(RMSNormOptions options);
  /// x [..., dim] → same shape.
  at::Tensor forward(const at::Tensor& x);

  RMSNormOptions options;
  at::Tensor weight;  ///< undefined without elementwise_affine
};
TORCH_MODULE(RMSNorm);

/// Outputs of AdaLayerNormZero: the modulated hidden states and the MLP / gate chunks ([B, D] each).
struct AdaLayerNormZeroOutput {
  at::Tensor hidden_states, gate_msa, shift_mlp, scale_mlp, gate_mlp;
};

/// diffusers' AdaLayerNormZero (norm_type "layer_norm", no class embedding): silu(emb) → linear (D→6D) →
/// chunk shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp; norm = LayerNorm(D, no affine, eps 1e-6);
/// hidden = norm(x) * (1 + scale_msa[:, None]) + shift_msa[:, None].
class AdaLayerNormZeroImpl : public torch::nn::Module {
 public:
  explicit AdaLayerNormZeroImpl(int64_t embedding_dim, bool bias = true);
  /// x [B, L, D], emb [B, D].
  AdaLayerNormZeroOutput forward(const at::Tensor& x, const at::Tensor& emb);

  torch::nn::Linear linear{nullptr};
  torch::nn::LayerNorm norm{nullptr};
};
TORCH_MODULE(AdaLayerNormZero);

struct AdaLayerNormZeroSingleOutput {
  at::Tensor hidden_states, gate;
};

/// diffusers' AdaLayerNormZeroSingle: silu → linear (D→3D) → chunk shift, scale, gate; LayerNorm(no affine, 1e-6).
class AdaLayerNormZeroSingleImpl : public torch::nn::Module {
 public:
  explicit AdaLayerNormZeroSingleImpl(int64_t embedding_dim, bool bias = true);
  /// x [B, L, D], emb [B, D].
  AdaLayerNormZeroSingleOutput forward(const at::Tensor& x, const at::Tensor& emb);

  torch::nn::Linear linear{nullptr};
  torch::nn::LayerNorm norm{nullptr};
};
TORCH_MODULE(AdaLayerNormZeroSingle);

struct SD35AdaLayerNormZeroXOutput {
  at::Tensor hidden_states, gate_msa, shift_mlp, scale_mlp, gate_mlp, norm_hidden_states2, gate_msa2;
};

/// diffusers' SD35AdaLayerNormZeroX: silu → linear (D→9D) → chunk shift_msa, scale_msa, gate_msa, shift_mlp,
/// scale_mlp, gate_mlp, shift_msa2, scale_msa2, gate_msa2; one LayerNorm(no affine, 1e-6) of x, modulated twice.
class SD35AdaLayerNormZeroXImpl : public torch::nn::Module {
 public:
  explicit SD35AdaLayerNormZeroXImpl(int64_t embedding_dim, bool bias = true);
  /// x [B, L, D], emb [B, D].
  SD35AdaLayerNormZeroXOutput forward(const at::Tensor& x, const at::Tensor& emb);

  torch::nn::Linear linear{nullptr};
  torch::nn::LayerNorm norm{nullptr};
};
TORCH_MODULE(SD35AdaLayerNormZeroX);

/// diffusers' AdaLayerNormContinuous (norm_type "layer_norm"): silu(cond) cast to x's dtype → linear (C→2D) →
/// chunk **scale, shift**; x = norm(x) * (1 + scale)[:, None, :] + shift[:, None, :]. The LayerNorm has an affine
/// weight and bias when `elementwise_affine` (diffusers' LayerNorm takes `bias` for both the linear and the norm;
/// an affine norm without bias is refused with ModelLoadError, LibTorch 1.13's LayerNorm cannot express it).
class AdaLayerNormContinuousImpl : public torch::nn::Module {
 public:
  AdaLayerNormContinuousImpl(int64_t embedding_dim, int64_t conditioning_embedding_dim, bool elementwise_affine,
                             double eps, bool bias = true);
  /// x [B, L, D], conditioning_embedding [B, C] → [B, L, D].
  at::Tensor forward(const at::Tensor& x, const at::Tensor& conditioning_embedding);

  torch::nn::Linear linear{nullptr};
  torch::nn::LayerNorm norm{nullptr};
};
TORCH_MODULE(AdaLayerNormContinuous);

}  // namespace tessera
