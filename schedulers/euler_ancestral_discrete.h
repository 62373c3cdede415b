#pragma once
/// EulerAncestralDiscreteScheduler: Euler steps with ancestral sampling (fresh noise every step).
#include "schedulers/schedule_utils.h"

namespace tessera {

/// diffusers.EulerAncestralDiscreteScheduler (epsilon / v_prediction). Draws one standard-normal tensor of the
/// model output's shape per step, the last step included, as diffusers does (keeps generators in sync).
class EulerAncestralDiscreteScheduler : public Scheduler {
 public:
  explicit EulerAncestralDiscreteScheduler(SchedulerConfig cfg);
  std::string type() const override { return "EulerAncestralDiscreteScheduler"; }
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
  int64_t steps_offset_ = 0;
};

}  // namespace tessera
