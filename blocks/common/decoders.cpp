#include "blocks/common/decoders.h"

namespace tessera {

BlockSpec ToImageStep::spec() const { return BlockSpec(kId, kDescription).input(latents).output(images); }

void ToImageStep::run(Components&, BlockState& s) const {
  const at::Tensor& x = s.tensor(latents.name);
  if (x.dim() != 4 || x.size(1) == 2 || x.size(1) < 1)
    throw InputError("latents must be [B, C, H, W] with C = 1 or C >= 3, got " + s.get(latents.name).repr(), {},
                     s.block_path());
  at::Tensor rgb = x.size(1) == 1 ? x.expand({-1, 3, -1, -1}) : x.slice(1, 0, 3);  // [B, 3, H, W]
  rgb = rgb.to(at::kFloat);
  const int64_t b = rgb.size(0);
  at::Tensor flat = rgb.reshape({b, -1});  // [B, 3*H*W]
  at::Tensor lo = flat.amin(1, /*keepdim=*/true), hi = flat.amax(1, /*keepdim=*/true);  // [B, 1]
  at::Tensor range = hi - lo;
  at::Tensor normalised = at::where(range > 0, (flat - lo) / range.clamp_min(1e-30), at::full_like(flat, 0.5));
  s.set(images.name, ImageBatch{normalised.view(rgb.sizes()).contiguous()});
}

}  // namespace tessera
