#include "models/common/rotary_embedding.h"

#include <torch/torch.h>

#include "tessera/error.h"

namespace tessera {

std::pair<at::Tensor, at::Tensor> get_1d_rotary_pos_embed(int64_t dim, const at::Tensor& pos, double theta,
                                                          bool repeat_interleave_real, at::ScalarType freqs_dtype) {
  if (dim <= 0 || dim % 2 != 0)
    throw ExecutionError("get_1d_rotary_pos_embed: dim must be positive and even, got " + std::to_string(dim));
  if (pos.dim() != 1)
    throw ExecutionError("get_1d_rotary_pos_embed: pos must be 1-D, got " + std::to_string(pos.dim()) + "-D");
  const auto options = at::TensorOptions().dtype(freqs_dtype).device(pos.device());
  // 1.0 / (theta ** (arange(0, dim, 2) / dim)), as diffusers writes it (Python's 1.0 / t is reciprocal(t) * 1.0).
  at::Tensor exponent = at::arange(0, dim, 2, options) / static_cast<double>(dim);  // [D/2]
  at::Tensor freqs = at::pow(theta, exponent).reciprocal();                          // [D/2]
  freqs = at::outer(pos, freqs);                                                      // [S, D/2]
  at::Tensor cos = freqs.cos(), sin = freqs.sin();
  if (repeat_interleave_real) {
    cos = cos.repeat_interleave(2, 1);  // [S, D]
    sin = sin.repeat_interleave(2, 1);  // [S, D]
  } else {
    cos = at::cat({cos, cos}, -1);  // [S, D]
    sin = at::cat({sin, sin}, -1);  // [S, D]
  }
  return {cos.to(at::kFloat), sin.to(at::kFloat)};
}

FluxPosEmbedImpl::FluxPosEmbedImpl(double theta_, std::vector<int64_t> axes_dim_)
    : theta(theta_), axes_dim(std::move(axes_dim_)) {
  for (int64_t d : axes_dim)
    if (d <= 0 || d % 2 != 0)
      throw ModelLoadError("FluxPosEmbed: every axes_dims_rope entry must be positive and even, got " +
                           std::to_string(d));
}

std::pair<at::Tensor, at::Tensor> FluxPosEmbedImpl::forward(const at::Tensor& ids) {
  if (ids.dim() != 2 || ids.size(1) != static_cast<int64_t>(axes_dim.size()))
    throw ExecutionError("FluxPosEmbed: ids must be [S, " + std::to_string(axes_dim.size()) + "], got " +
                         std::to_string(ids.dim()) + "-D with last dim " + std::to_string(ids.size(-1)));
  at::Tensor pos = ids.to(at::kFloat);  // [S, n_axes]
  // float64 frequencies, as diffusers keeps them on CPU/CUDA (maybe_adjust_dtype_for_device); float32 on MPS.
  const auto freqs_dtype = ids.device().is_mps() ? at::kFloat : at::kDouble;
  std::vector<at::Tensor> cos_out, sin_out;
  for (size_t i = 0; i < axes_dim.size(); ++i) {
    auto cs = get_1d_rotary_pos_embed(axes_dim[i], pos.select(1, static_cast<int64_t>(i)), theta, true, freqs_dtype);
    cos_out.push_back(cs.first);
    sin_out.push_back(cs.second);
  }
  return {at::cat(cos_out, -1), at::cat(sin_out, -1)};  // [S, sum(axes_dim)] each
}

at::Tensor apply_rotary_emb(const at::Tensor& x, const std::pair<at::Tensor, at::Tensor>& freqs_cis,
                            bool use_real_unbind_dim_minus_one, int64_t sequence_dim) {
  if (x.dim() != 4) throw ExecutionError("apply_rotary_emb: x must be 4-D, got " + std::to_string(x.dim()) + "-D");
  at::Tensor cos = freqs_cis.first, sin = freqs_cis.second;  // [S, D]
  if (sequence_dim == 2) {
    cos = cos.unsqueeze(0).unsqueeze(0);  // [1, 1, S, D]
    sin = sin.unsqueeze(0).unsqueeze(0);
  } else if (sequence_dim == 1) {
    cos = cos.unsqueeze(1).unsqueeze(0);  // [1, S, 1, D]
    sin = sin.unsqueeze(1).unsqueeze(0);
  } else {
    throw ExecutionError("apply_rotary_emb: sequence_dim must be 1 or 2, got " + std::to_string(sequence_dim));
  }
  cos = cos.to(x.device());
  sin = sin.to(x.device());
  const int64_t d = x.size(-1);
  at::Tensor x_rotated;
  if (use_real_unbind_dim_minus_one) {
    auto parts = x.reshape({x.size(0), x.size(1), x.size(2), d / 2, 2}).unbind(-1);  // real, imag: [.., .., .., D/2]
    x_rotated = at::stack({-parts[1], parts[0]}, -1).flatten(3);                      // [.., .., .., D]
  } else {
    auto parts = x.reshape({x.size(0), x.size(1), x.size(2), 2, d / 2}).unbind(-2);  // real, imag: [.., .., .., D/2]
    x_rotated = at::cat({-parts[1], parts[0]}, -1);                                   // [.., .., .., D]
  }
  return (x.to(at::kFloat) * cos + x_rotated.to(at::kFloat) * sin).to(x.scalar_type());
}

}  // namespace tessera
