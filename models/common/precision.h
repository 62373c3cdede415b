#pragma once
/// Compute dtypes of models (float32 or bfloat16) and the ops kept in float32 under bfloat16.
///
/// Convention for every model (UNet2DConditionModel, AutoencoderKL, CLIP text models): parameters and activations
/// are in the model's dtype (its parameters' dtype); floating inputs of any dtype are cast to it on entry, and
/// every floating output is returned in float32, so callers (blocks, schedulers, guiders) always see float32.
/// Kept in float32 inside a bfloat16 model: group-norm and layer-norm (statistics and the affine transform,
/// cast back afterwards), attention scores' softmax (dispatch_attention), sinusoidal timestep embeddings, and
/// the VAE distribution's mean/logvar.
#include <ATen/ATen.h>
#include <torch/nn/modules/normalization.h>

#include <string>

namespace tessera {

struct ComponentSpec;

/// The LibTorch dtype of a spec's `dtype` ("", "fp32", "float32" → kFloat; "bf16", "bfloat16" → kBFloat16);
/// ModelLoadError naming the component for anything else.
at::ScalarType model_dtype(const ComponentSpec& spec);
/// "float32" / "bfloat16" / … for messages.
std::string dtype_display_name(at::ScalarType dtype);

/// GroupNorm whose statistics and affine transform are computed in float32 (input of another floating dtype is
/// upcast and the result cast back); float32 input runs the module as is.
at::Tensor group_norm_fp32(torch::nn::GroupNormImpl& norm, const at::Tensor& x);
/// LayerNorm, same rule.
at::Tensor layer_norm_fp32(torch::nn::LayerNormImpl& norm, const at::Tensor& x);

/// `t` in float32 when it is a defined floating tensor of another dtype (else `t`).
at::Tensor to_float32(const at::Tensor& t);

}  // namespace tessera
