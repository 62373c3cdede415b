#include "models/common/normalization.h"

#include <torch/torch.h>

#include "tessera/error.h"
#include "models/common/precision.h"

namespace tessera {

namespace {

torch::nn::LayerNorm plain_layer_norm(int64_t dim, double eps) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).elementwise_affine(false).eps(eps));
}

// silu(emb) → linear, in the linear's dtype.
at::Tensor modulation(torch::nn::LinearImpl& linear, const at::Tensor& emb) {
  return linear.forward(at::silu(emb));  // [B, n*D]
}

}  // namespace

// ---- RMSNorm ----

RMSNormImpl::RMSNormImpl(RMSNormOptions options_) : options(std::move(options_)) {
  if (options.dim() <= 0)
    throw ModelLoadError("RMSNorm: dim must be positive, got " + std::to_string(options.dim()));
  if (options.elementwise_affine()) weight = register_parameter("weight", torch::ones({options.dim()}));
}

at::Tensor RMSNormImpl::forward(const at::Tensor& x) {
  const auto input_dtype = x.scalar_type();
  if (options.flavor() == RMSNormFlavor::Diffusers) {
    at::Tensor variance = x.to(at::kFloat).pow(2).mean({-1}, /*keepdim=*/true);  // [..., 1] float32
    at::Tensor hidden = x * at::rsqrt(variance + options.eps());                 // promoted to float32
    if (weight.defined()) {
      if (weight.scalar_type() == at::kHalf || weight.scalar_type() == at::kBFloat16)
        hidden = hidden.to(weight.scalar_type());
      return hidden * weight;
    }
    return hidden.to(input_dtype);
  }
  // torch.nn.RMSNorm: upcast reduced-precision input (opmath), normalise and scale there, cast once.
  const bool reduced = input_dtype == at::kHalf || input_dtype == at::kBFloat16;
  at::Tensor upcast = reduced ? x.to(at::kFloat) : x;
  at::Tensor rrms = at::rsqrt(upcast.pow(2).mean({-1}, /*keepdim=*/true) + options.eps());  // [..., 1]
  at::Tensor hidden = upcast * rrms;
  if (weight.defined()) hidden = hidden * weight.to(hidden.scalar_type());
  return hidden.to(input_dtype);
}

// ---- AdaLayerNormZero ----

AdaLayerNormZeroImpl::AdaLayerNormZeroImpl(int64_t embedding_dim, bool bias) {
  linear = register_module(
      "linear", torch::nn::Linear(torch::nn::LinearOptions(embedding_dim, 6 * embedding_dim).bias(bias)));
  norm = register_module("norm", plain_layer_norm(embedding_dim, 1e-6));
}

AdaLayerNormZeroOutput AdaLayerNormZeroImpl::forward(const at::Tensor& x, const at::Tensor& emb_in) {
  auto c = modulation(*linear, emb_in).chunk(6, 1);  // 6 × [B, D]
  const at::Tensor &shift_msa = c[0], &scale_msa = c[1];
  AdaLayerNormZeroOutput out;
  out.hidden_states = layer_norm_fp32(*norm, x) * (1 + scale_msa.unsqueeze(1)) + shift_msa.unsqueeze(1);  // [B, L, D]
  out.gate_msa = c[2];
  out.shift_mlp = c[3];
  out.scale_mlp = c[4];
  out.gate_mlp = c[5];
  return out;
}

// ---- AdaLayerNormZeroSingle ----

AdaLayerNormZeroSingleImpl::AdaLayerNormZeroSingleImpl(int64_t embedding_dim, bool bias) {
  linear = register_module(
      "linear", torch::nn::Linear(torch::nn::LinearOptions(embedding_dim, 3 * embedding_dim).bias(bias)));
  norm = register_module("norm", plain_layer_norm(embedding_dim, 1e-6));
}

AdaLayerNormZeroSingleOutput AdaLayerNormZeroSingleImpl::forward(const at::Tensor& x, const at::Tensor& emb_in) {
  auto c = modulation(*linear, emb_in).chunk(3, 1);  // shift, scale, gate: [B, D] each
  AdaLayerNormZeroSingleOutput out;
  out.hidden_states = layer_norm_fp32(*norm, x) * (1 + c[1].unsqueeze(1)) + c[0].unsqueeze(1);  // [B, L, D]
  out.gate = c[2];
  return out;
}

// ---- SD35AdaLayerNormZeroX ----

SD35AdaLayerNormZeroXImpl::SD35AdaLayerNormZeroXImpl(int64_t embedding_dim, bool bias) {
  linear = register_module(
      "linear", torch::nn::Linear(torch::nn::LinearOptions(embedding_dim, 9 * embedding_dim).bias(bias)));
  norm = register_module("norm", plain_layer_norm(embedding_dim, 1e-6));
}

SD35AdaLayerNormZeroXOutput SD35AdaLayerNormZeroXImpl::forward(const at::Tensor& x, const at::Tensor& emb_in) {
  // shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp, shift_msa2, scale_msa2, gate_msa2
  auto c = modulation(*linear, emb_in).chunk(9, 1);  // 9 × [B, D]
  at::Tensor norm_hidden_states = layer_norm_fp32(*norm, x);  // [B, L, D]
  SD35AdaLayerNormZeroXOutput out;
  out.hidden_states = norm_hidden_states * (1 + c[1].unsqueeze(1)) + c[0].unsqueeze(1);
  out.gate_msa = c[2];
  out.shift_mlp = c[3];
  out.scale_mlp = c[4];
  out.gate_mlp = c[5];
  out.norm_hidden_states2 = norm_hidden_states * (1 + c[7].unsqueeze(1)) + c[6].unsqueeze(1);
  out.gate_msa2 = c[8];
  return out;
}

// ---- AdaLayerNormContinuous ----

AdaLayerNormContinuousImpl::AdaLayerNormContinuousImpl(int64_t embedding_dim, int64_t conditioning_embedding_dim,
                                                       bool elementwise_affine, double eps, bool bias) {
  if (elementwise_affine && !bias)
    throw ModelLoadError(
        "AdaLayerNormContinuous: elementwise_affine=true with bias=false (a LayerNorm with weight but no bias) is "
        "not supported");
  linear = register_module("linear", torch::nn::Linear(torch::nn::LinearOptions(conditioning_embedding_dim,
                                                                                2 * embedding_dim)
                                                           .bias(bias)));
  norm = register_module(
      "norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({embedding_dim}).elementwise_affine(elementwise_affine).eps(eps)));
}

at::Tensor AdaLayerNormContinuousImpl::forward(const at::Tensor& x, const at::Tensor& conditioning_embedding) {
  at::Tensor emb = linear(at::silu(conditioning_embedding).to(x.scalar_type()));  // [B, 2D]
  auto c = emb.chunk(2, 1);  // scale, shift: [B, D] each
  return layer_norm_fp32(*norm, x) * (1 + c[0]).unsqueeze(1) + c[1].unsqueeze(1);  // [B, L, D]
}

}  // namespace tessera
