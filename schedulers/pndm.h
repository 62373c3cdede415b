#pragma once
/// PNDMScheduler: pseudo numerical methods for diffusion models (https://arxiv.org/abs/2202.09778): Runge-Kutta
/// warm-up steps (PRK) then linear multistep (PLMS); skip_prk_steps gives the PLMS-only variant of SD.
#include "schedulers/schedule_utils.h"

namespace tessera {

/// diffusers.PNDMScheduler (epsilon / v_prediction). Its first PLMS step evaluates the model twice at the
/// same place, so timesteps() has one more entry than num_inference_steps.
class PNDMScheduler : public Scheduler {
 public:
  explicit PNDMScheduler(SchedulerConfig cfg);
  std::string type() const override { return "PNDMScheduler"; }
  void set_timesteps(int64_t num_inference_steps, const SetTimestepsOptions& options = {}) override;
  SchedulerOutput step(const at::Tensor& model_output, double timestep, const at::Tensor& sample,
                       std::optional<at::Generator> generator = std::nullopt,
                       std::optional<at::Tensor> noise = std::nullopt) override;
  at::Tensor add_noise(const at::Tensor& original_samples, const at::Tensor& noise,
                       const at::Tensor& timesteps) override;

 private:
  at::Tensor step_prk(const at::Tensor& model_output, int64_t timestep, const at::Tensor& sample);
  at::Tensor step_plms(const at::Tensor& model_output, int64_t timestep, const at::Tensor& sample);
  at::Tensor prev_sample(const at::Tensor& sample, int64_t t, int64_t prev_t, at::Tensor model_output) const;
  BetaSchedule schedule_;
  at::Tensor final_alpha_cumprod_;
  bool skip_prk_steps_;
  std::string prediction_type_, timestep_spacing_;
  int64_t steps_offset_;
  std::vector<int64_t> prk_timesteps_;
  // Multistep state, reset by set_timesteps.
  std::vector<at::Tensor> ets_;
  int64_t counter_ = 0;
  at::Tensor cur_model_output_, cur_sample_;
};

}  // namespace tessera
