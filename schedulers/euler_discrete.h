#pragma once
/// EulerDiscreteScheduler: Euler's method on the Karras et al. (2022) ODE, sigma-parameterised.
#include "schedulers/schedule_utils.h"

namespace tessera {

/// diffusers.EulerDiscreteScheduler (epsilon / sample / v_prediction, linear or log_linear interpolation,
/// Karras sigmas, final sigma zero or sigma_min, s_churn noise via set_step_option).
class EulerDiscreteScheduler : public Scheduler {
 public:
  explicit EulerDiscreteScheduler(SchedulerConfig cfg);
  std::string type() const override { return "EulerDiscreteScheduler"; }
  void set_timesteps(int64_t num_inference_steps, const SetTimestepsOptions& options = {}) override;
  double init_noise_sigma() const override;
  at::Tensor scale_model_input(const at::Tensor& sample, double timestep) override;
  SchedulerOutput step(const at::Tensor& model_output, double timestep, const at::Tensor& sample,
                       std::optional<at::Generator> generator = std::nullopt,
                       std::optional<at::Tensor> noise = std::nullopt) override;
  at::Tensor add_noise(const at::Tensor& original_samples, const at::Tensor& noise,
                       const at::Tensor& timesteps) override;
  /// s_churn, s_tmin, s_tmax, s_noise (diffusers' step keyword arguments).
  void set_step_option(const std::string& name, double value) override;

 private:
  BetaSchedule schedule_;
  std::string prediction_type_, interpolation_type_, timestep_spacing_, final_sigmas_type_;
  bool use_karras_sigmas_ = false;
  std::optional<double> sigma_min_, sigma_max_;
  int64_t steps_offset_ = 0;
  double s_churn_ = 0, s_tmin_ = 0, s_tmax_ = INFINITY, s_noise_ = 1;
};

/// add_noise of the sigma-based schedulers: x + noise * sigma(t), sigma looked up by timestep (or begin index).
at::Tensor add_noise_sigmas(Scheduler& s, const at::Tensor& sigmas, const at::Tensor& schedule_timesteps,
                            std::optional<int64_t> begin_index, std::optional<int64_t> step_index,
                            const at::Tensor& original_samples, const at::Tensor& noise, const at::Tensor& timesteps);

}  // namespace tessera
