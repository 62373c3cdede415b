#include "blocks/common/random.h"

#include <ATen/CPUGeneratorImpl.h>
#include <spdlog/spdlog.h>

#include <random>

namespace tessera {

int64_t seed_or_random(BlockState& s, const std::string& seed_input) {
  if (s.has(seed_input)) return s.get_int(seed_input);
  std::random_device rd;
  const auto seed = static_cast<int64_t>(((static_cast<uint64_t>(rd()) << 32) ^ rd()) >> 1);
  spdlog::info("{}: no seed given, drew seed {} (reproduce with --set {}={})", s.block_path(), seed, seed_input, seed);
  s.set(seed_input, Value(seed));
  return seed;
}

at::Generator cpu_generator(int64_t seed) {
  return at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(seed));
}

}  // namespace tessera
