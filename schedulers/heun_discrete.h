#pragma once
/// HeunDiscreteScheduler: Heun's second-order method (Karras et al. 2022, Algorithm 1): two model calls per
/// step, so every timestep after the first appears twice in timesteps().
#include "schedulers/schedule_utils.h"

namespace tessera {

/// diffusers.HeunDiscreteScheduler (epsilon / v_prediction / sample, clip_sample, Karras sigmas). order() is 2.
class HeunDiscreteScheduler : public Scheduler {
 public:
  explicit HeunDiscreteScheduler(SchedulerConfig cfg);
  std::string type() const override { return "HeunDiscreteScheduler"; }
  int order() const override { return 2; }
  void set_timesteps(int64_t num_inference_steps, const SetTimestepsOptions& options = {}) override;
  double init_noise_sigma() const override;
  at::Tensor scale_model_input(const at::Tensor& sample, double timestep) override;
  SchedulerOutput step(const at::Tensor& model_output, double timestep, const at::Tensor& sample,
                       std::optional<at::Generator> generator = std::nullopt,
                       std::optional<at::Tensor> noise = std::nullopt) override;
  at::Tensor add_noise(const at::Tensor& original_samples, const at::Tensor& noise,
                       const at::Tensor& timesteps) override;

 private:
  BetaSchedule schedule_;
  std::string prediction_type_, timestep_spacing_;
  bool use_karras_sigmas_ = false, clip_sample_ = false;
  double clip_sample_range_ = 1.0;
  int64_t steps_offset_ = 0;
  // Between the two calls of a step: the first derivative, the step size and the starting sample.
  at::Tensor prev_derivative_, dt_, first_sample_;
};

/// Discrete sigma schedule shared by the k-diffusion style schedulers (Heun, KDPM2, LMS): float32 timesteps for
/// `spacing` and sigmas interpolated from the training schedule (Karras when asked), both without the final 0.
void discrete_sigma_schedule(const BetaSchedule& schedule, const std::string& spacing, int64_t n, int64_t steps_offset,
                             bool karras, std::vector<double>& timesteps, std::vector<double>& sigmas);

}  // namespace tessera
