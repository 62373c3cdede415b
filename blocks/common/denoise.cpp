#include "blocks/common/denoise.h"

#include "blocks/common/params.h"

namespace tessera {

DiffuseStep::DiffuseStep(const ValueMap& p) : rate_(param_value(p, rate).to_float(rate.name)) {
  if (!(rate_ >= 0.0 && rate_ <= 0.25))
    throw std::invalid_argument("param 'rate' must be in [0, 0.25] (above 0.25 the explicit step diverges), got " +
                                std::to_string(rate_));
}

BlockSpec DiffuseStep::spec() const {
  return BlockSpec(kId, kDescription).input(latents).input(t).input(i).output(latents_out);
}

at::Tensor DiffuseStep::heat_step(const at::Tensor& x, double rate) {
  const int64_t h = x.size(2), w = x.size(3);
  at::Tensor p = at::replication_pad2d(x, {1, 1, 1, 1});  // [B, C, H+2, W+2]
  at::Tensor rows = p.slice(3, 1, w + 1);                 // [B, C, H+2, W]
  at::Tensor cols = p.slice(2, 1, h + 1);                 // [B, C, H, W+2]
  at::Tensor laplacian =
      rows.slice(2, 0, h) + rows.slice(2, 2, h + 2) + cols.slice(3, 0, w) + cols.slice(3, 2, w + 2) - 4.0 * x;
  return x + rate * laplacian;
}

void DiffuseStep::run(Components&, BlockState& s) const {
  const at::Tensor& x = s.tensor(latents.name);
  if (x.dim() != 4 || !at::isFloatingType(x.scalar_type()))
    throw InputError("latents must be a floating-point tensor [B, C, H, W], got " + s.get(latents.name).repr(), {},
                     s.block_path());
  // A new tensor, not an in-place update: the caller's latents may be shared (an input, a checkpoint).
  s.set(latents_out.name, heat_step(x, rate_));
}

}  // namespace tessera
