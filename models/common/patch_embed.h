#pragma once
/// diffusers' PatchEmbed (models/embeddings.py) in the SD3 form: a Conv2d with kernel = stride = patch_size
/// (`proj`), flattened to tokens, plus a fixed 2-D sin-cos position table `pos_embed` [1, M*M, D]
/// (M = pos_embed_max_size) that is center-cropped to the latent's patch grid. The table is a persistent buffer
/// (it is in SD3 checkpoints and is loaded from them); get_2d_sincos_pos_embed computes it for from_config models.
/// `pos_embed_type` null (SD3 ControlNet's pos_embed_input) has no table at all.
///
///   PatchEmbed pe(PatchEmbedOptions().height(128).width(128).patch_size(2).in_channels(16).embed_dim(1536)
///                     .pos_embed_max_size(96));
///   at::Tensor tokens = pe(latents);  // [B, 16, H, W] → [B, (H/2)*(W/2), 1536]
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <optional>
#include <string>

namespace tessera {

/// diffusers' get_2d_sincos_pos_embed(embed_dim, grid_size=(grid_h, grid_w), base_size, interpolation_scale)
/// → [grid_h * grid_w, embed_dim] float32, row-major over (row, col). Positions are computed in float32
/// (arange / (grid / base_size) / interpolation_scale), frequencies and sin/cos in float64 as diffusers does on
/// CPU; the first half of the features encodes the column coordinate, the second half the row. embed_dim must be
/// a multiple of 4 (ModelLoadError otherwise).
at::Tensor get_2d_sincos_pos_embed(int64_t embed_dim, int64_t grid_h, int64_t grid_w, double base_size,
                                   double interpolation_scale = 1.0);

/// Options of diffusers' PatchEmbed (same names and defaults).
struct PatchEmbedOptions {
  TORCH_ARG(int64_t, height) = 224;
  TORCH_ARG(int64_t, width) = 224;
  TORCH_ARG(int64_t, patch_size) = 16;
  TORCH_ARG(int64_t, in_channels) = 3;
  TORCH_ARG(int64_t, embed_dim) = 768;
  TORCH_ARG(bool, layer_norm) = false;  ///< LayerNorm(embed_dim, no affine, eps 1e-6) after flattening
  TORCH_ARG(bool, flatten) = true;      ///< only true is supported (ModelLoadError otherwise)
  TORCH_ARG(bool, bias) = true;
  TORCH_ARG(double, interpolation_scale) = 1.0;
  /// "sincos" or null (no position table). Others are refused.
  TORCH_ARG(std::optional<std::string>, pos_embed_type) = std::string("sincos");
  /// Required with "sincos": diffusers' non-persistent, resized table (pos_embed_max_size null) is not supported.
  TORCH_ARG(std::optional<int64_t>, pos_embed_max_size) = std::nullopt;
};

/// diffusers' PatchEmbed with SD3 cropping: `proj` (Conv2d), optional `norm`, buffer `pos_embed` [1, M*M, D].
class PatchEmbedImpl : public torch::nn::Module {
 public:
  explicit PatchEmbedImpl(PatchEmbedOptions options);
  /// latent [B, in_channels, H, W] → [B, (H/p)*(W/p), embed_dim] in the latent's dtype. InputError when H/p or W/p
  /// exceeds pos_embed_max_size (naming both sizes).
  at::Tensor forward(const at::Tensor& latent);
  /// The table rows of a (height/p) x (width/p) patch grid, center-cropped: [1, (H/p)*(W/p), D];
  /// top = (M - H/p) // 2, left = (M - W/p) // 2.
  at::Tensor cropped_pos_embed(int64_t height, int64_t width) const;

  PatchEmbedOptions options;
  torch::nn::Conv2d proj{nullptr};
  torch::nn::LayerNorm norm{nullptr};
  at::Tensor pos_embed;  ///< [1, M*M, embed_dim] (registered buffer "pos_embed"); undefined without a table
};
TORCH_MODULE(PatchEmbed);

}  // namespace tessera
