#pragma once
/// DDPMScheduler: ancestral sampling of denoising diffusion probabilistic models (https://arxiv.org/abs/2006.11239).
#include "schedulers/schedule_utils.h"

namespace tessera {

/// diffusers.DDPMScheduler with the fixed variance types (fixed_small, fixed_small_log, fixed_large,
/// fixed_large_log); the learned variance types need a model that predicts them and are rejected.
class DDPMScheduler : public Scheduler {
 public:
  explicit DDPMScheduler(SchedulerConfig cfg);
  std::string type() const override { return "DDPMScheduler"; }
  void set_timesteps(int64_t num_inference_steps, const SetTimestepsOptions& options = {}) override;
  SchedulerOutput step(const at::Tensor& model_output, double timestep, const at::Tensor& sample,
                       std::optional<at::Generator> generator = std::nullopt,
                       std::optional<at::Tensor> noise = std::nullopt) override;
  at::Tensor add_noise(const at::Tensor& original_samples, const at::Tensor& noise,
                       const at::Tensor& timesteps) override;

 private:
  int64_t previous_timestep(int64_t t) const;
  BetaSchedule schedule_;
  std::string variance_type_, prediction_type_, timestep_spacing_;
  bool clip_sample_, thresholding_;
  double clip_sample_range_, dynamic_thresholding_ratio_, sample_max_value_;
  int64_t steps_offset_;
};

}  // namespace tessera
