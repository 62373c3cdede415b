#pragma once
/// LMSDiscreteScheduler: linear multistep (Adams-Bashforth in sigma, up to order 4) on the k-diffusion ODE.
#include "schedulers/schedule_utils.h"

namespace tessera {

/// diffusers.LMSDiscreteScheduler (epsilon / v_prediction / sample, Karras sigmas). The LMS coefficients are
/// integrals of Lagrange polynomials (degree < 4), computed exactly by Gauss-Legendre quadrature where diffusers
/// calls scipy's adaptive quad; the results agree to rounding. The step order is a step option ("order", 4).
class LMSDiscreteScheduler : public Scheduler {
 public:
  explicit LMSDiscreteScheduler(SchedulerConfig cfg);
  std::string type() const override { return "LMSDiscreteScheduler"; }
  void set_timesteps(int64_t num_inference_steps, const SetTimestepsOptions& options = {}) override;
  double init_noise_sigma() const override;
  at::Tensor scale_model_input(const at::Tensor& sample, double timestep) override;
  SchedulerOutput step(const at::Tensor& model_output, double timestep, const at::Tensor& sample,
                       std::optional<at::Generator> generator = std::nullopt,
                       std::optional<at::Tensor> noise = std::nullopt) override;
  at::Tensor add_noise(const at::Tensor& original_samples, const at::Tensor& noise,
                       const at::Tensor& timesteps) override;
  void set_step_option(const std::string& name, double value) override;

 private:
  double lms_coefficient(int64_t order, int64_t t, int64_t current_order) const;
  BetaSchedule schedule_;
  std::string prediction_type_, timestep_spacing_;
  bool use_karras_sigmas_ = false;
  int64_t steps_offset_ = 0, order_ = 4;
  std::vector<double> sigma_values_;  ///< sigmas_ as doubles, for the coefficients
  std::vector<at::Tensor> derivatives_;
};

}  // namespace tessera
