#pragma once
/// diffusers' resnet.py / downsampling.py / upsampling.py building blocks shared by the UNet and the VAE:
/// ResnetBlock2D, Downsample2D, Upsample2D, with submodules registered under diffusers' keys
/// (norm1, conv1, time_emb_proj, norm2, conv2, conv_shortcut; conv).
///
///   ResnetBlock2D block(ResnetBlock2DOptions(320).out_channels(640).temb_channels(1280));
///   at::Tensor h = block(x, temb);            // [B, 640, H, W]
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tessera {

/// diffusers' get_activation: "swish" / "silu", "mish", "gelu", "relu". Throws ModelLoadError otherwise.
at::Tensor apply_activation(const std::string& name, const at::Tensor& x);
/// apply_activation on a tensor nothing else refers to (a norm's fresh output), in place when autograd is not
/// recording (silu/swish and relu; others as apply_activation): one pass and no new activation-sized buffer, which
/// saves ~45 % of a GroupNorm+SiLU at the VAE's 512² resolutions (tools/bench/RESULTS.md).
at::Tensor apply_activation_(const std::string& name, at::Tensor x);
/// SiLU after a norm, as apply_activation_("silu", x).
inline at::Tensor silu_after_norm(at::Tensor x) { return apply_activation_("silu", std::move(x)); }
/// Throws ModelLoadError naming `name` when apply_activation does not know it (checked at construction).
void check_activation(const std::string& name);

/// Options of diffusers' ResnetBlock2D (the arguments SD/SDXL UNets and VAEs use).
struct ResnetBlock2DOptions {
  explicit ResnetBlock2DOptions(int64_t in_channels) : in_channels_(in_channels) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(std::optional<int64_t>, out_channels) = std::nullopt;  ///< default: in_channels
  /// Time-embedding width; 0 = no time embedding (diffusers' temb_channels=None, as in the VAE).
  TORCH_ARG(int64_t, temb_channels) = 512;
  TORCH_ARG(int64_t, groups) = 32;
  TORCH_ARG(std::optional<int64_t>, groups_out) = std::nullopt;  ///< default: groups
  TORCH_ARG(double, eps) = 1e-6;
  /// "default" (add temb before norm2) or "scale_shift" (norm2 then h * (1 + scale) + shift).
  TORCH_ARG(std::string, time_embedding_norm) = "default";
  TORCH_ARG(std::string, non_linearity) = "swish";
  TORCH_ARG(double, output_scale_factor) = 1.0;
  TORCH_ARG(std::optional<bool>, use_in_shortcut) = std::nullopt;  ///< default: in != out
  TORCH_ARG(bool, conv_shortcut_bias) = true;
};

/// diffusers' ResnetBlock2D: norm1 → act → conv1 (+ time embedding) → norm2 → act → conv2, plus a (1x1 conv)
/// shortcut; (shortcut + h) / output_scale_factor.
class ResnetBlock2DImpl : public torch::nn::Module {
 public:
  explicit ResnetBlock2DImpl(ResnetBlock2DOptions options);
  /// input [B, in, H, W], temb [B, temb_channels] (undefined when temb_channels is 0) → [B, out, H, W].
  at::Tensor forward(const at::Tensor& input_tensor, const at::Tensor& temb = {});

  ResnetBlock2DOptions options;
  torch::nn::GroupNorm norm1{nullptr}, norm2{nullptr};
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv_shortcut{nullptr};
  torch::nn::Linear time_emb_proj{nullptr};
};
TORCH_MODULE(ResnetBlock2D);

/// Options of diffusers' Downsample2D (no norm, kernel 3).
struct Downsample2DOptions {
  explicit Downsample2DOptions(int64_t channels) : channels_(channels) {}
  TORCH_ARG(int64_t, channels);
  TORCH_ARG(bool, use_conv) = false;  ///< false: 2x2 average pooling (no parameters)
  TORCH_ARG(std::optional<int64_t>, out_channels) = std::nullopt;  ///< default: channels
  /// Conv padding; 0 pads the input by one zero row/column at the bottom/right first (the VAE encoder).
  TORCH_ARG(int64_t, padding) = 1;
  TORCH_ARG(bool, bias) = true;
};

/// diffusers' Downsample2D: stride-2 3x3 conv `conv` (or average pooling).
class Downsample2DImpl : public torch::nn::Module {
 public:
  explicit Downsample2DImpl(Downsample2DOptions options);
  /// [B, C, H, W] → [B, out, H/2, W/2].
  at::Tensor forward(const at::Tensor& hidden_states);

  Downsample2DOptions options;
  torch::nn::Conv2d conv{nullptr};
};
TORCH_MODULE(Downsample2D);

/// Options of diffusers' Upsample2D (nearest interpolation, no norm, no transposed conv).
struct Upsample2DOptions {
  explicit Upsample2DOptions(int64_t channels) : channels_(channels) {}
  TORCH_ARG(int64_t, channels);
  TORCH_ARG(bool, use_conv) = false;
  TORCH_ARG(std::optional<int64_t>, out_channels) = std::nullopt;  ///< default: channels
  TORCH_ARG(int64_t, kernel_size) = 3;
  TORCH_ARG(int64_t, padding) = 1;
  TORCH_ARG(bool, bias) = true;
};

/// diffusers' Upsample2D: nearest 2x (or to output_size) then the optional conv `conv`.
class Upsample2DImpl : public torch::nn::Module {
 public:
  explicit Upsample2DImpl(Upsample2DOptions options);
  /// [B, C, H, W] → [B, out, 2H, 2W] (or [B, out, output_size...]).
  at::Tensor forward(const at::Tensor& hidden_states,
                     const std::optional<std::vector<int64_t>>& output_size = std::nullopt);

  Upsample2DOptions options;
  torch::nn::Conv2d conv{nullptr};
};
TORCH_MODULE(Upsample2D);

}  // namespace tessera
