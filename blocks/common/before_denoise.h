#pragma once
/// common.* blocks that run before the denoising loop: initial noise and the step schedule.
#include "tessera/block.h"

namespace tessera {

/// common.prepare_noise: standard-normal latents [B, C, H, W] drawn from the CPU generator exactly as
/// `torch.randn((B, C, H, W), generator=torch.Generator().manual_seed(seed))` (float32), so a seed gives
/// the noise diffusers would draw. With a `generator` the draw continues its stream instead; with
/// neither, a nondeterministic seed is drawn, logged and written back as `seed` (to embed and reuse).
///
///   noise:  {block: common.prepare_noise, params: {channels: 4}}   # inputs: seed: 42, height: 32, width: 32
class PrepareNoiseStep final : public LeafBlock {
 public:
  static constexpr const char* kId = "common.prepare_noise";
  static constexpr const char* kDescription =
      "Draw standard-normal latents [B, C, H, W] from a seeded CPU generator (same values as torch.randn with "
      "torch.Generator().manual_seed(seed))";

  static inline const InputParam seed{
      "seed", Kind::Int,
      "Seed of the CPU generator; absent (and no generator) = a random seed, logged and written back"};
  static inline const InputParam generator{"generator", Kind::Generator,
                                           "CPU generator to draw from instead of a seed (its state advances)"};
  static inline const InputParam height{"height", Kind::Int, "Height H of the noise", false, Value(int64_t{64})};
  static inline const InputParam width{"width", Kind::Int, "Width W of the noise", false, Value(int64_t{64})};
  static inline const InputParam batch_size{"batch_size", Kind::Int, "Batch size B", false, Value(int64_t{1})};
  static inline const OutputParam latents{"latents", Kind::Tensor, "Standard-normal noise [B, C, H, W] float32"};
  /// Construction param.
  static inline const InputParam channels{"channels", Kind::Int, "Channels C of the noise", false, Value(int64_t{3})};
  static std::vector<InputParam> params() { return {channels}; }

  explicit PrepareNoiseStep(const ValueMap& params = {});
  BlockSpec spec() const override;
  void run(Components& components, BlockState& state) const override;

 private:
  int64_t channels_;
};

/// common.set_steps: the step schedule of a model-free loop. `timesteps` = n values spaced evenly from
/// 1 (pure noise) down to 1/n, i.e. linspace(1, 0, n + 1) without its last element: every step starts at
/// a noise level above 0, and the step at t = 1/n ends at the clean image (t = 0 needs no step).
class SetStepsStep final : public LeafBlock {
 public:
  static constexpr const char* kId = "common.set_steps";
  static constexpr const char* kDescription =
      "Step schedule: timesteps = linspace(1, 0, n + 1)[:n] (float32), one per denoising step";

  static inline const InputParam num_inference_steps{"num_inference_steps", Kind::Int,
                                                     "Number of denoising steps n (> 0)", false, Value(int64_t{20})};
  static inline const OutputParam timesteps{"timesteps", Kind::Tensor, "Timesteps [n] float32, from 1 down to 1/n"};
  static inline const OutputParam steps_out{"num_inference_steps", Kind::Int, "Number of denoising steps n"};
  static std::vector<InputParam> params() { return {}; }

  explicit SetStepsStep(const ValueMap& params = {}) {}
  BlockSpec spec() const override;
  void run(Components& components, BlockState& state) const override;
};

}  // namespace tessera
