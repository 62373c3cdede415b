#include "models/common/patch_embed.h"

#include <torch/torch.h>

#include "tessera/error.h"
#include "models/common/precision.h"

namespace tessera {

namespace {

// diffusers' get_1d_sincos_pos_embed_from_grid (flip_sin_to_cos false): [M] positions → [M, embed_dim],
// frequencies 1 / 10000^(i / (D/2)) in float64, features [sin | cos].
at::Tensor sincos_1d(int64_t embed_dim, const at::Tensor& pos) {
  at::Tensor omega = at::arange(embed_dim / 2, at::TensorOptions().dtype(at::kDouble));
  omega = omega / (static_cast<double>(embed_dim) / 2.0);
  omega = 1.0 / at::pow(10000.0, omega);                            // [D/2]
  at::Tensor out = at::outer(pos.reshape({-1}).to(at::kDouble), omega);  // [M, D/2]
  return at::cat({at::sin(out), at::cos(out)}, 1);                  // [M, D]
}

}  // namespace

at::Tensor get_2d_sincos_pos_embed(int64_t embed_dim, int64_t grid_h, int64_t grid_w, double base_size,
                                   double interpolation_scale) {
  if (embed_dim <= 0 || embed_dim % 4 != 0)
    throw ModelLoadError("get_2d_sincos_pos_embed: embed_dim must be a positive multiple of 4, got " +
                         std::to_string(embed_dim));
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  // Positions in float32, in diffusers' order of operations.
  at::Tensor h = at::arange(grid_h, f32) / (static_cast<double>(grid_h) / base_size) / interpolation_scale;  // [gh]
  at::Tensor w = at::arange(grid_w, f32) / (static_cast<double>(grid_w) / base_size) / interpolation_scale;  // [gw]
  // torch.meshgrid(w, h, indexing="xy"): both [gh, gw]; the first varies along columns (w), the second along rows.
  at::Tensor grid_col = w.unsqueeze(0).expand({grid_h, grid_w});
  at::Tensor grid_row = h.unsqueeze(1).expand({grid_h, grid_w});
  at::Tensor emb_a = sincos_1d(embed_dim / 2, grid_col);  // [gh*gw, D/2]  (diffusers' "emb_h", from grid[0])
  at::Tensor emb_b = sincos_1d(embed_dim / 2, grid_row);  // [gh*gw, D/2]
  return at::cat({emb_a, emb_b}, 1).to(at::kFloat);        // [gh*gw, D]
}

PatchEmbedImpl::PatchEmbedImpl(PatchEmbedOptions options_) : options(std::move(options_)) {
  const int64_t p = options.patch_size();
  if (p < 1) throw ModelLoadError("PatchEmbed: patch_size must be at least 1, got " + std::to_string(p));
  if (!options.flatten()) throw ModelLoadError("PatchEmbed: flatten=false is not supported");
  proj = register_module("proj", torch::nn::Conv2d(torch::nn::Conv2dOptions(options.in_channels(), options.embed_dim(), p)
                                                       .stride(p)
                                                       .bias(options.bias())));
  if (options.layer_norm())
    norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({options.embed_dim()})
                                                            .elementwise_affine(false)
                                                            .eps(1e-6)));
  if (!options.pos_embed_type()) return;
  if (*options.pos_embed_type() != "sincos")
    throw ModelLoadError("PatchEmbed: pos_embed_type '" + *options.pos_embed_type() +
                         "' is not supported (\"sincos\" or null)");
  if (!options.pos_embed_max_size() || *options.pos_embed_max_size() < 1)
    throw ModelLoadError("PatchEmbed: pos_embed_type \"sincos\" needs pos_embed_max_size (>= 1); the resized "
                         "non-persistent table of pos_embed_max_size null is not supported");
  const int64_t grid = *options.pos_embed_max_size();
  const int64_t base_size = options.height() / p;
  if (base_size < 1)
    throw ModelLoadError("PatchEmbed: height " + std::to_string(options.height()) + " is smaller than patch_size " +
                         std::to_string(p) + " (base_size would be 0)");
  // The table of a from_config model; from_pretrained overwrites it with the checkpoint's buffer.
  pos_embed = register_buffer(
      "pos_embed", get_2d_sincos_pos_embed(options.embed_dim(), grid, grid, static_cast<double>(base_size),
                                           options.interpolation_scale())
                       .unsqueeze(0));  // [1, M*M, D]
}

at::Tensor PatchEmbedImpl::cropped_pos_embed(int64_t height, int64_t width) const {
  const int64_t m = *options.pos_embed_max_size();
  const int64_t h = height / options.patch_size(), w = width / options.patch_size();
  if (h > m || w > m)
    throw InputError("PatchEmbed: the latent's patch grid " + std::to_string(h) + "x" + std::to_string(w) +
                     " (latent " + std::to_string(height) + "x" + std::to_string(width) + ", patch_size " +
                     std::to_string(options.patch_size()) + ") exceeds pos_embed_max_size " + std::to_string(m) +
                     "; use a latent of at most " + std::to_string(m * options.patch_size()) + " per side");
  const int64_t top = (m - h) / 2, left = (m - w) / 2;
  at::Tensor spatial = pos_embed.reshape({1, m, m, -1});                           // [1, M, M, D]
  spatial = spatial.narrow(1, top, h).narrow(2, left, w);                          // [1, h, w, D]
  return spatial.reshape({1, -1, spatial.size(-1)});                               // [1, h*w, D]
}

at::Tensor PatchEmbedImpl::forward(const at::Tensor& latent_in) {
  if (latent_in.dim() != 4 || latent_in.size(1) != options.in_channels())
    throw InputError("PatchEmbed: latent must be [B, " + std::to_string(options.in_channels()) + ", H, W], got " +
                     c10::str(latent_in.sizes()));
  const int64_t height = latent_in.size(2), width = latent_in.size(3);
  at::Tensor pos = pos_embed.defined() ? cropped_pos_embed(height, width) : at::Tensor();  // checked before the conv
  at::Tensor latent = proj(latent_in);               // [B, D, H/p, W/p]
  latent = latent.flatten(2).transpose(1, 2);        // [B, (H/p)*(W/p), D]
  if (norm) latent = layer_norm_fp32(*norm, latent);
  if (!pos.defined()) return latent;
  return (latent + pos).to(latent.scalar_type());    // [B, N, D]
}

}  // namespace tessera
