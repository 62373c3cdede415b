#include "blocks/common/before_denoise.h"

#include "blocks/common/params.h"
#include "blocks/common/random.h"

namespace tessera {

namespace {
int64_t positive(const BlockState& s, const InputParam& p) {
  int64_t v = s.get_int(p.name);
  if (v <= 0)
    throw InputError("input '" + p.name + "' must be positive, got " + std::to_string(v), {}, s.block_path());
  return v;
}
}  // namespace

// ---------------------------------------------------------------- common.prepare_noise

PrepareNoiseStep::PrepareNoiseStep(const ValueMap& p) : channels_(param_value(p, channels).to_int(channels.name)) {
  if (channels_ <= 0) throw std::invalid_argument("param 'channels' must be positive, got " + std::to_string(channels_));
}

BlockSpec PrepareNoiseStep::spec() const {
  return BlockSpec(kId, kDescription)
      .input(seed)
      .input(generator)
      .input(height)
      .input(width)
      .input(batch_size)
      .output(latents);
}

void PrepareNoiseStep::run(Components&, BlockState& s) const {
  const int64_t b = positive(s, batch_size), h = positive(s, height), w = positive(s, width);
  // A bad height/width should not turn into a multi-gigabyte allocation attempt.
  constexpr double kMaxElements = double(int64_t{1} << 31);
  if (double(b) * double(channels_) * double(h) * double(w) > kMaxElements)
    throw InputError("noise [" + std::to_string(b) + ", " + std::to_string(channels_) + ", " + std::to_string(h) +
                         ", " + std::to_string(w) + "] is larger than 2^31 elements",
                     {}, s.block_path());

  at::Generator gen;
  if (s.has(generator.name)) {
    if (s.has(seed.name))
      throw InputError("both 'seed' and 'generator' are given; the noise can come from only one", {}, s.block_path(),
                       "drop one of them");
    gen = s.get(generator.name).generator(generator.name);
    if (!gen.device().is_cpu())
      throw InputError("'generator' must be a CPU generator (got one on " + gen.device().str() +
                           "); CPU draws are what reproduce diffusers' seeds",
                       {}, s.block_path());
  } else {
    gen = cpu_generator(seed_or_random(s, seed.name));
  }
  s.set(latents.name, at::randn({b, channels_, h, w}, gen, at::TensorOptions().dtype(at::kFloat)));
}

// ---------------------------------------------------------------- common.set_steps

BlockSpec SetStepsStep::spec() const {
  return BlockSpec(kId, kDescription).input(num_inference_steps).output(timesteps).output(steps_out);
}

void SetStepsStep::run(Components&, BlockState& s) const {
  const int64_t n = s.get_int(num_inference_steps.name);
  if (n <= 0)
    throw InputError("num_inference_steps must be at least 1, got " + std::to_string(n), {}, s.block_path());
  at::Tensor t = at::linspace(1.0, 0.0, n + 1, at::TensorOptions().dtype(at::kFloat)).slice(0, 0, n).clone();  // [n]
  s.set(timesteps.name, t);
  s.set(steps_out.name, Value(n));
}

}  // namespace tessera
