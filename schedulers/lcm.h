#pragma once
/// LCMScheduler: latent consistency models (https://arxiv.org/abs/2310.04378), multistep consistency sampling.
#include "schedulers/schedule_utils.h"

namespace tessera {

/// diffusers.LCMScheduler. pred_original_sample is LCM's `denoised` (the consistency-function output); every step
/// but the last re-noises it with a fresh standard-normal draw.
class LCMScheduler : public Scheduler {
 public:
  explicit LCMScheduler(SchedulerConfig cfg);
  std::string type() const override { return "LCMScheduler"; }
  void set_timesteps(int64_t num_inference_steps, const SetTimestepsOptions& options = {}) override;
  SchedulerOutput step(const at::Tensor& model_output, double timestep, const at::Tensor& sample,
                       std::optional<at::Generator> generator = std::nullopt,
                       std::optional<at::Tensor> noise = std::nullopt) override;
  at::Tensor add_noise(const at::Tensor& original_samples, const at::Tensor& noise,
                       const at::Tensor& timesteps) override;

 private:
  BetaSchedule schedule_;
  at::Tensor final_alpha_cumprod_;
  int64_t original_inference_steps_ = 50;
  bool clip_sample_ = false, thresholding_ = false;
  double clip_sample_range_ = 1.0, dynamic_thresholding_ratio_ = 0.995, sample_max_value_ = 1.0, timestep_scaling_ = 10.0;
  std::string prediction_type_;
};

}  // namespace tessera
