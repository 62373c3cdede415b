#pragma once
/// diffusers' FeedForward (models/attention.py) with its input projections GELU / GEGLU (models/activations.py).
/// State-dict keys: net.0.proj (the activation's projection), net.2 (the output linear); net.1 is a dropout.
///
///   FeedForward ff(FeedForwardOptions(dim).activation_fn("gelu-approximate"));   // FLUX, SD3
///   FeedForward unet_ff(320, 1280);                                              // UNet: GEGLU, inner 1280
///   at::Tensor y = ff(x);  // [B, L, dim] → [B, L, dim_out]
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <optional>
#include <string>

namespace tessera {

/// diffusers' GELU: proj (dim_in → dim_out), gelu(x, approximate "none" | "tanh").
class GELUImpl : public torch::nn::Module {
 public:
  GELUImpl(int64_t dim_in, int64_t dim_out, std::string approximate = "none", bool bias = true);
  at::Tensor forward(const at::Tensor& hidden_states);
  std::string approximate;
  torch::nn::Linear proj{nullptr};
};
TORCH_MODULE(GELU);

/// diffusers' GEGLU: proj (dim_in → 2*dim_out), hidden * gelu(gate).
class GEGLUImpl : public torch::nn::Module {
 public:
  GEGLUImpl(int64_t dim_in, int64_t dim_out, bool bias = true);
  at::Tensor forward(const at::Tensor& hidden_states);
  torch::nn::Linear proj{nullptr};
};
TORCH_MODULE(GEGLU);

/// Options of diffusers' FeedForward (dropout is the identity at inference; final_dropout is not modelled).
struct FeedForwardOptions {
  explicit FeedForwardOptions(int64_t dim) : dim_(dim) {}
  TORCH_ARG(int64_t, dim);
  TORCH_ARG(std::optional<int64_t>, dim_out) = std::nullopt;    ///< default: dim
  TORCH_ARG(int64_t, mult) = 4;
  TORCH_ARG(std::optional<int64_t>, inner_dim) = std::nullopt;  ///< default: dim * mult
  /// "geglu" | "gelu" | "gelu-approximate" (tanh); anything else is a ModelLoadError.
  TORCH_ARG(std::string, activation_fn) = "geglu";
  TORCH_ARG(bool, bias) = true;
};

/// diffusers' FeedForward: net.0 = GELU/GEGLU (projection + activation), net.1 = dropout, net.2 = Linear.
class FeedForwardImpl : public torch::nn::Module {
 public:
  explicit FeedForwardImpl(FeedForwardOptions options);
  /// The UNet's form: activation "geglu", dim → inner_dim → dim.
  FeedForwardImpl(int64_t dim, int64_t inner_dim, bool bias = true);
  /// [..., dim] → [..., dim_out].
  at::Tensor forward(const at::Tensor& hidden_states);

  FeedForwardOptions options;
  GEGLU net_0_geglu{nullptr};  ///< net.0 for "geglu"
  GELU net_0_gelu{nullptr};    ///< net.0 for "gelu" / "gelu-approximate"
  torch::nn::Linear net_2{nullptr};
  torch::nn::ModuleList net{nullptr};

 private:
  void build();
};
TORCH_MODULE(FeedForward);

}  // namespace tessera
