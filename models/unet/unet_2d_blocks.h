#pragma once
/// The UNet stages of diffusers' unet_2d_blocks.py used by Stable Diffusion 1.x/2.x and SDXL:
/// DownBlock2D, CrossAttnDownBlock2D, UNetMidBlock2DCrossAttn, UpBlock2D, CrossAttnUpBlock2D. Submodules are
/// registered under diffusers' keys (resnets.N, attentions.N, downsamplers.0, upsamplers.0).
///
///   CrossAttnDownBlock2D down(UNetBlockOptions(320, 640, 1280).cross_attention_dim(768).num_attention_heads(10));
///   auto [h, skips] = down(x, temb, encoder_hidden_states, nullptr);
///
/// The cross-attention stages take the call's layer hooks and IP-Adapter tokens (`ip_hidden_states`, one
/// [B, tokens, cross] tensor per installed adapter, or null; see UNet2DConditionInputs::ip_hidden_states) and hand
/// both to their Transformer2DModels.
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "guiders/layer_hooks.h"

namespace tessera {

/// Options shared by the UNet stages (diffusers' get_down_block / get_up_block / mid-block arguments).
struct UNetBlockOptions {
  UNetBlockOptions(int64_t in_channels, int64_t out_channels, int64_t temb_channels)
      : in_channels_(in_channels), out_channels_(out_channels), temb_channels_(temb_channels) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  TORCH_ARG(int64_t, temb_channels);
  TORCH_ARG(int64_t, prev_output_channel) = 0;  ///< up blocks: channels coming from the previous up block
  TORCH_ARG(int64_t, num_layers) = 1;
  TORCH_ARG(int64_t, transformer_layers_per_block) = 1;
  TORCH_ARG(double, resnet_eps) = 1e-6;
  TORCH_ARG(std::string, resnet_time_scale_shift) = "default";
  TORCH_ARG(std::string, resnet_act_fn) = "swish";
  TORCH_ARG(int64_t, resnet_groups) = 32;
  TORCH_ARG(double, output_scale_factor) = 1.0;
  TORCH_ARG(bool, add_downsample) = true;
  TORCH_ARG(bool, add_upsample) = true;
  TORCH_ARG(int64_t, downsample_padding) = 1;
  TORCH_ARG(int64_t, num_attention_heads) = 1;
  TORCH_ARG(int64_t, cross_attention_dim) = 1280;
  TORCH_ARG(bool, use_linear_projection) = false;
  TORCH_ARG(bool, only_cross_attention) = false;
  TORCH_ARG(bool, upcast_attention) = false;
};

/// What a down block returns: the hidden states and the skip connections it produced (one per resnet, plus the
/// downsampled output).
using DownBlockOutput = std::pair<at::Tensor, std::vector<at::Tensor>>;

/// diffusers' DownBlock2D: resnets, then an optional strided-conv downsampler.
class DownBlock2DImpl : public torch::nn::Module {
 public:
  explicit DownBlock2DImpl(UNetBlockOptions options);
  DownBlockOutput forward(const at::Tensor& hidden_states, const at::Tensor& temb);
  UNetBlockOptions options;
  torch::nn::ModuleList resnets{nullptr}, downsamplers{nullptr};
};
TORCH_MODULE(DownBlock2D);

/// diffusers' CrossAttnDownBlock2D: (resnet, Transformer2DModel) pairs, then an optional downsampler.
class CrossAttnDownBlock2DImpl : public torch::nn::Module {
 public:
  explicit CrossAttnDownBlock2DImpl(UNetBlockOptions options);
  DownBlockOutput forward(const at::Tensor& hidden_states, const at::Tensor& temb,
                          const at::Tensor& encoder_hidden_states, const std::vector<LayerHook>* hooks,
                          const std::vector<at::Tensor>* ip_hidden_states = nullptr);
  UNetBlockOptions options;
  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr}, downsamplers{nullptr};
};
TORCH_MODULE(CrossAttnDownBlock2D);

/// diffusers' UNetMidBlock2DCrossAttn: resnet, then num_layers (Transformer2DModel, resnet) pairs
/// (in_channels = out_channels).
class UNetMidBlock2DCrossAttnImpl : public torch::nn::Module {
 public:
  explicit UNetMidBlock2DCrossAttnImpl(UNetBlockOptions options);
  at::Tensor forward(const at::Tensor& hidden_states, const at::Tensor& temb, const at::Tensor& encoder_hidden_states,
                     const std::vector<LayerHook>* hooks, const std::vector<at::Tensor>* ip_hidden_states = nullptr);
  UNetBlockOptions options;
  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr};
};
TORCH_MODULE(UNetMidBlock2DCrossAttn);

/// diffusers' UpBlock2D: resnets over (hidden ⧺ skip) channels, then an optional nearest ×2 upsampler + conv.
/// `res_hidden_states` are the skips for this block in the order they were produced (the last is used first).
class UpBlock2DImpl : public torch::nn::Module {
 public:
  explicit UpBlock2DImpl(UNetBlockOptions options);
  at::Tensor forward(const at::Tensor& hidden_states, std::vector<at::Tensor> res_hidden_states, const at::Tensor& temb,
                     const std::optional<std::vector<int64_t>>& upsample_size);
  UNetBlockOptions options;
  torch::nn::ModuleList resnets{nullptr}, upsamplers{nullptr};
};
TORCH_MODULE(UpBlock2D);

/// diffusers' CrossAttnUpBlock2D: (resnet over hidden ⧺ skip, Transformer2DModel) pairs, then an optional upsampler.
class CrossAttnUpBlock2DImpl : public torch::nn::Module {
 public:
  explicit CrossAttnUpBlock2DImpl(UNetBlockOptions options);
  at::Tensor forward(const at::Tensor& hidden_states, std::vector<at::Tensor> res_hidden_states, const at::Tensor& temb,
                     const at::Tensor& encoder_hidden_states, const std::optional<std::vector<int64_t>>& upsample_size,
                     const std::vector<LayerHook>* hooks, const std::vector<at::Tensor>* ip_hidden_states = nullptr);
  UNetBlockOptions options;
  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr}, upsamplers{nullptr};
};
TORCH_MODULE(CrossAttnUpBlock2D);

}  // namespace tessera
