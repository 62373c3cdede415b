#pragma once
/// The stages of diffusers' AutoencoderKL (vae.py and the VAE blocks of unet_2d_blocks.py): the VAE's
/// single-head spatial self-attention, UNetMidBlock2D, DownEncoderBlock2D, UpDecoderBlock2D, Encoder and
/// Decoder. Submodules are registered under diffusers' keys (encoder.down_blocks.0.resnets.0.norm1, …).
///
///   Encoder enc(EncoderOptions().block_out_channels({128, 256, 512, 512}).double_z(true));
///   at::Tensor moments = enc(image);   // [B, 2 * latent_channels, H/8, W/8]
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <string>
#include <vector>

#include "models/common/attention_dispatch.h"

namespace tessera {

/// Options of the VAE's attention: diffusers' Attention as UNetMidBlock2D builds it (heads = channels /
/// attention_head_dim, group_norm, bias, residual_connection, upcast_softmax; formerly the AttentionBlock class).
struct AttentionBlockOptions {
  explicit AttentionBlockOptions(int64_t channels) : channels_(channels) {}
  TORCH_ARG(int64_t, channels);
  TORCH_ARG(int64_t, attention_head_dim) = 0;  ///< 0 = channels (one head, as the VAE)
  TORCH_ARG(int64_t, norm_num_groups) = 32;
  TORCH_ARG(double, eps) = 1e-6;
  TORCH_ARG(double, rescale_output_factor) = 1.0;
  TORCH_ARG(AttentionBackend, backend) = AttentionBackend::Auto;
};

/// diffusers' Attention in the VAE mid block: group_norm, to_q, to_k, to_v, to_out.0 (to_out.1 is dropout),
/// self-attention over the H*W positions, plus the residual, divided by rescale_output_factor.
class AttentionBlockImpl : public torch::nn::Module {
 public:
  explicit AttentionBlockImpl(AttentionBlockOptions options);
  /// [B, C, H, W] → [B, C, H, W].
  at::Tensor forward(const at::Tensor& hidden_states);

  AttentionBlockOptions options;
  int64_t heads = 1;
  torch::nn::GroupNorm group_norm{nullptr};
  torch::nn::Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr};
  torch::nn::ModuleList to_out{nullptr};  ///< [Linear]; the dropout to_out.1 has no parameters
};
TORCH_MODULE(AttentionBlock);

/// Options shared by the VAE stages.
struct VAEBlockOptions {
  VAEBlockOptions(int64_t in_channels, int64_t out_channels) : in_channels_(in_channels), out_channels_(out_channels) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  TORCH_ARG(int64_t, num_layers) = 1;
  TORCH_ARG(double, resnet_eps) = 1e-6;
  TORCH_ARG(std::string, resnet_act_fn) = "swish";
  TORCH_ARG(int64_t, resnet_groups) = 32;
  TORCH_ARG(bool, add_sample) = true;  ///< add_downsample / add_upsample
  TORCH_ARG(int64_t, downsample_padding) = 1;
  TORCH_ARG(bool, add_attention) = true;  ///< UNetMidBlock2D only
};

/// diffusers' UNetMidBlock2D without time embedding: resnets.0, then num_layers (attentions.i, resnets.i+1).
class UNetMidBlock2DImpl : public torch::nn::Module {
 public:
  /// in_channels = out_channels = options.in_channels().
  explicit UNetMidBlock2DImpl(VAEBlockOptions options);
  at::Tensor forward(const at::Tensor& hidden_states);
  VAEBlockOptions options;
  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr};
};
TORCH_MODULE(UNetMidBlock2D);

/// diffusers' DownEncoderBlock2D: resnets (no time embedding) then downsamplers.0 (padding-0 stride-2 conv).
class DownEncoderBlock2DImpl : public torch::nn::Module {
 public:
  explicit DownEncoderBlock2DImpl(VAEBlockOptions options);
  at::Tensor forward(const at::Tensor& hidden_states);
  VAEBlockOptions options;
  torch::nn::ModuleList resnets{nullptr}, downsamplers{nullptr};
};
TORCH_MODULE(DownEncoderBlock2D);

/// diffusers' UpDecoderBlock2D: resnets (no time embedding) then upsamplers.0 (nearest 2x + conv).
class UpDecoderBlock2DImpl : public torch::nn::Module {
 public:
  explicit UpDecoderBlock2DImpl(VAEBlockOptions options);
  at::Tensor forward(const at::Tensor& hidden_states);
  VAEBlockOptions options;
  torch::nn::ModuleList resnets{nullptr}, upsamplers{nullptr};
};
TORCH_MODULE(UpDecoderBlock2D);

/// Options of diffusers' Encoder / Decoder (vae.py), defaults as there.
struct VAECoderOptions {
  TORCH_ARG(int64_t, in_channels) = 3;
  TORCH_ARG(int64_t, out_channels) = 3;
  TORCH_ARG(std::vector<std::string>, block_types) = {};  ///< down_block_types / up_block_types (one per level)
  TORCH_ARG(std::vector<int64_t>, block_out_channels) = std::vector<int64_t>{64};
  TORCH_ARG(int64_t, layers_per_block) = 2;
  TORCH_ARG(int64_t, norm_num_groups) = 32;
  TORCH_ARG(std::string, act_fn) = "silu";
  TORCH_ARG(bool, double_z) = true;  ///< Encoder: 2 * out_channels outputs (mean and logvar)
  TORCH_ARG(bool, mid_block_add_attention) = true;
};

/// diffusers' Encoder: conv_in, down_blocks (DownEncoderBlock2D), mid_block, conv_norm_out, SiLU, conv_out.
class EncoderImpl : public torch::nn::Module {
 public:
  explicit EncoderImpl(VAECoderOptions options);
  /// [B, in, H, W] → [B, (2*)out, H / 2^(levels-1), W / 2^(levels-1)].
  at::Tensor forward(const at::Tensor& sample);
  VAECoderOptions options;
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  torch::nn::ModuleList down_blocks{nullptr};
  UNetMidBlock2D mid_block{nullptr};
  torch::nn::GroupNorm conv_norm_out{nullptr};
};
TORCH_MODULE(Encoder);

/// diffusers' Decoder: conv_in, mid_block, up_blocks (UpDecoderBlock2D, layers_per_block + 1 resnets each),
/// conv_norm_out, SiLU, conv_out.
class DecoderImpl : public torch::nn::Module {
 public:
  explicit DecoderImpl(VAECoderOptions options);
  /// [B, in, h, w] → [B, out, h * 2^(levels-1), w * 2^(levels-1)].
  at::Tensor forward(const at::Tensor& sample);
  VAECoderOptions options;
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  UNetMidBlock2D mid_block{nullptr};
  torch::nn::ModuleList up_blocks{nullptr};
  torch::nn::GroupNorm conv_norm_out{nullptr};
};
TORCH_MODULE(Decoder);

}  // namespace tessera
