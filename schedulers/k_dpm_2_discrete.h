#pragma once
/// KDPM2DiscreteScheduler: k-diffusion's DPM-Solver-2 (Karras et al. 2022): a midpoint step at the log-mean
/// sigma, two model calls per step.
#include "schedulers/schedule_utils.h"

namespace tessera {

/// diffusers.KDPM2DiscreteScheduler (epsilon / v_prediction, Karras sigmas). order() is 2; timesteps() interleave
/// the midpoint timesteps.
class KDPM2DiscreteScheduler : public Scheduler {
 public:
  explicit KDPM2DiscreteScheduler(SchedulerConfig cfg);
  std::string type() const override { return "KDPM2DiscreteScheduler"; }
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
  bool use_karras_sigmas_ = false;
  int64_t steps_offset_ = 0;
  at::Tensor sigmas_interpol_;
  at::Tensor first_sample_;  ///< set between the two calls of a step
};

}  // namespace tessera
