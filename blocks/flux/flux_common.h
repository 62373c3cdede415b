#pragma once
/// FLUX.1's latent layout: 2×2 patches packed into tokens and their 3-axis position ids, as FluxPipeline's
/// _pack_latents / _unpack_latents / _prepare_latent_image_ids.
///
///   at::Tensor tokens = flux::pack_latents(z);              // [B, C, h, w] → [B, (h/2)(w/2), 4C]
///   at::Tensor ids = flux::make_latent_image_ids(h / 2, w / 2);  // [(h/2)(w/2), 3]
///   at::Tensor back = flux::unpack_latents(tokens, h, w);   // == z
#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <utility>

namespace tessera::flux {

/// [B, C, h, w] → [B, (h/2)(w/2), 4C]; feature index c*4 + dy*2 + dx. h and w must be even.
at::Tensor pack_latents(const at::Tensor& latents);
/// [B, (h/2)(w/2), 4C] → [B, C, h, w] (latent h and w, not pixels).
at::Tensor unpack_latents(const at::Tensor& packed, int64_t h, int64_t w);
/// (0, row, col) for every token of a rows × cols grid, float32 [rows*cols, 3].
at::Tensor make_latent_image_ids(int64_t rows, int64_t cols);

/// Latent size of an H × W image: (H / vae_scale_factor, W / vae_scale_factor). H and W must be positive
/// multiples of 2 × vae_scale_factor (FluxPipeline floors them with a warning; Tessera refuses them instead, so an
/// image never comes out smaller than asked).
std::pair<int64_t, int64_t> latent_size(int64_t height, int64_t width, int64_t vae_scale_factor,
                                        const std::string& block_path);

}  // namespace tessera::flux
