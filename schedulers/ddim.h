#pragma once
/// DDIMScheduler: denoising diffusion implicit models (https://arxiv.org/abs/2010.02502); eta = 0 is
/// deterministic, eta > 0 adds noise drawn from the step's generator.
#include "schedulers/schedule_utils.h"

namespace tessera {

/// diffusers.DDIMScheduler (epsilon / sample / v_prediction, clip_sample, thresholding, zero-SNR rescale).
class DDIMScheduler : public Scheduler {
 public:
  explicit DDIMScheduler(SchedulerConfig cfg);
  std::string type() const override { return "DDIMScheduler"; }
  void set_timesteps(int64_t num_inference_steps, const SetTimestepsOptions& options = {}) override;
  SchedulerOutput step(const at::Tensor& model_output, double timestep, const at::Tensor& sample,
                       std::optional<at::Generator> generator = std::nullopt,
                       std::optional<at::Tensor> noise = std::nullopt) override;
  at::Tensor add_noise(const at::Tensor& original_samples, const at::Tensor& noise,
                       const at::Tensor& timesteps) override;
  /// `eta` (0 = DDIM, 1 = DDPM-like) and `use_clipped_model_output` (0/1).
  void set_step_option(const std::string& name, double value) override;

 private:
  at::Tensor alpha_prod(int64_t t) const;
  BetaSchedule schedule_;
  at::Tensor final_alpha_cumprod_;
  bool clip_sample_, thresholding_;
  double clip_sample_range_, dynamic_thresholding_ratio_, sample_max_value_;
  int64_t steps_offset_;
  std::string prediction_type_, timestep_spacing_;
  double eta_ = 0.0;
  bool use_clipped_model_output_ = false;
};

/// Converts a model output to (x0, epsilon) at a discrete timestep with cumulative alpha `alpha_prod_t`
/// (0-d float32), for epsilon / sample / v_prediction. Shared by DDIM-like schedulers.
std::pair<at::Tensor, at::Tensor> ddim_predict(const std::string& prediction_type, const at::Tensor& model_output,
                                               const at::Tensor& sample, const at::Tensor& alpha_prod_t);
/// diffusers' dynamic thresholding (Imagen): per-sample quantile clamp of x0.
at::Tensor threshold_sample(const at::Tensor& sample, double ratio, double max_value);
/// add_noise of the discrete-time (alphas_cumprod) schedulers.
at::Tensor add_noise_cumprod(const at::Tensor& alphas_cumprod, const at::Tensor& original_samples,
                             const at::Tensor& noise, const at::Tensor& timesteps);

}  // namespace tessera
