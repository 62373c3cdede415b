#pragma once
/// Seeds and CPU generators, shared by every block that draws noise.
#include <ATen/ATen.h>

#include <cstdint>
#include <string>

#include "tessera/state.h"

namespace tessera {

/// The `seed_input` value, or (when absent) a nondeterministic seed below 2^63 (so that it round-trips through
/// `--set seed=…`), logged and written back to the state as `seed_input` so outputs can record it.
int64_t seed_or_random(BlockState& state, const std::string& seed_input);

/// `torch.Generator().manual_seed(seed)` on the CPU: LibTorch's generator is PyTorch's Mersenne Twister, so the
/// same seed gives the same draws. Negative seeds wrap to uint64 as manual_seed does.
at::Generator cpu_generator(int64_t seed);

}  // namespace tessera
