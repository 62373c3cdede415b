#pragma once
/// Rotary position embeddings of diffusers' models/embeddings.py (get_1d_rotary_pos_embed, apply_rotary_emb) and
/// FLUX's n-axis FluxPosEmbed (models/transformers/transformer_flux.py). Only the real (cos, sin) form is
/// implemented (`use_real=True`), which is what FLUX and the other DiTs here use.
///
///   FluxPosEmbed pe(10000.0, {16, 56, 56});
///   auto freqs = pe(ids);                        // ids [S, 3] → (cos [S, 128], sin [S, 128]) float32
///   at::Tensor q_rot = apply_rotary_emb(q, freqs, true, /*sequence_dim=*/1);   // q [B, S, H, D]
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <utility>
#include <vector>

namespace tessera {

/// diffusers' get_1d_rotary_pos_embed(use_real=True, linear_factor 1, ntk_factor 1): freqs = 1 / theta^(arange(0,
/// dim, 2) / dim) in `freqs_dtype` (float32 or float64), outer(pos, freqs) [S, dim/2], cos/sin each widened to
/// [S, dim] — repeat-interleaved (c0 c0 c1 c1 …) when `repeat_interleave_real`, else concatenated (c0 c1 … c0 c1 …)
/// — and returned in float32. `pos` [S] (any floating dtype; promoted with freqs). dim must be even.
std::pair<at::Tensor, at::Tensor> get_1d_rotary_pos_embed(int64_t dim, const at::Tensor& pos, double theta,
                                                          bool repeat_interleave_real, at::ScalarType freqs_dtype);

/// FLUX's FluxPosEmbed (no weights): ids [S, n_axes] → per axis i get_1d_rotary_pos_embed(axes_dim[i], ids[:, i]
/// as float32, theta, repeat_interleave_real=true, float64 freqs), concatenated along the last dim:
/// (cos [S, sum(axes_dim)], sin [S, sum(axes_dim)]) float32.
class FluxPosEmbedImpl : public torch::nn::Module {
 public:
  FluxPosEmbedImpl(double theta, std::vector<int64_t> axes_dim);
  /// ids [S, n_axes] with n_axes == axes_dim.size() (else ExecutionError).
  std::pair<at::Tensor, at::Tensor> forward(const at::Tensor& ids);

  double theta;
  std::vector<int64_t> axes_dim;
};
TORCH_MODULE(FluxPosEmbed);

/// diffusers' apply_rotary_emb(use_real=True): x [B, H, S, D] (sequence_dim 2) or [B, S, H, D] (sequence_dim 1),
/// freqs_cis (cos [S, D], sin [S, D]). Pairs are (x[2i], x[2i+1]) when `use_real_unbind_dim_minus_one` (FLUX,
/// CogVideoX), halves (x[i], x[i+D/2]) otherwise (use_real_unbind_dim=-2). out = (x.float()*cos + rot(x).float()*sin)
/// cast back to x's dtype.
at::Tensor apply_rotary_emb(const at::Tensor& x, const std::pair<at::Tensor, at::Tensor>& freqs_cis,
                            bool use_real_unbind_dim_minus_one = true, int64_t sequence_dim = 2);

}  // namespace tessera
