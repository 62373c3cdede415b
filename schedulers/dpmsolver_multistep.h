#pragma once
/// DPMSolverMultistepScheduler: DPM-Solver and DPM-Solver++ (https://arxiv.org/abs/2211.01095), multistep,
/// orders 1-3, deterministic or SDE variants, optional Karras sigmas.
#include "schedulers/schedule_utils.h"

namespace tessera {

/// diffusers.DPMSolverMultistepScheduler: algorithm_type dpmsolver++ | dpmsolver | sde-dpmsolver++ |
/// sde-dpmsolver, solver_type midpoint | heun, use_karras_sigmas, lower_order_final / euler_at_final,
/// lambda_min_clipped, final_sigmas_type. Keeps the last solver_order converted model outputs between steps.
class DPMSolverMultistepScheduler : public Scheduler {
 public:
  explicit DPMSolverMultistepScheduler(SchedulerConfig cfg);
  std::string type() const override { return "DPMSolverMultistepScheduler"; }
  void set_timesteps(int64_t num_inference_steps, const SetTimestepsOptions& options = {}) override;
  SchedulerOutput step(const at::Tensor& model_output, double timestep, const at::Tensor& sample,
                       std::optional<at::Generator> generator = std::nullopt,
                       std::optional<at::Tensor> noise = std::nullopt) override;
  at::Tensor add_noise(const at::Tensor& original_samples, const at::Tensor& noise,
                       const at::Tensor& timesteps) override;

 private:
  at::Tensor convert_model_output(const at::Tensor& model_output, const at::Tensor& sample) const;
  at::Tensor first_order(const at::Tensor& m0, const at::Tensor& sample, const at::Tensor& noise) const;
  at::Tensor second_order(const at::Tensor& sample, const at::Tensor& noise) const;
  at::Tensor third_order(const at::Tensor& sample, const at::Tensor& noise) const;
  int64_t find_index(double timestep) const;
  BetaSchedule schedule_;
  at::Tensor lambda_t_;
  int64_t solver_order_ = 2;
  std::string prediction_type_, algorithm_type_, solver_type_, timestep_spacing_, final_sigmas_type_, beta_schedule_;
  bool thresholding_ = false, lower_order_final_ = true, euler_at_final_ = false, use_karras_sigmas_ = false;
  double dynamic_thresholding_ratio_ = 0.995, sample_max_value_ = 1.0, lambda_min_clipped_ = -INFINITY;
  int64_t steps_offset_ = 0;
  // Multistep state, reset by set_timesteps.
  std::vector<at::Tensor> model_outputs_;
  int64_t lower_order_nums_ = 0;
};

/// alpha_t = 1 / sqrt(sigma² + 1), sigma_t = sigma * alpha_t: the VP coefficients of a VE sigma.
std::pair<at::Tensor, at::Tensor> sigma_to_alpha_sigma_t(const at::Tensor& sigma);

/// What a multistep solver works on (diffusers' convert_model_output, shared by DPM-Solver and UniPC):
/// the data prediction x0 when `predict_x0`, else the noise epsilon, with optional dynamic thresholding.
at::Tensor convert_multistep_model_output(const at::Tensor& model_output, const at::Tensor& sample,
                                          const at::Tensor& alpha_t, const at::Tensor& sigma_t,
                                          const std::string& prediction_type, bool predict_x0, bool thresholding,
                                          double dynamic_thresholding_ratio, double sample_max_value);

}  // namespace tessera
