#pragma once
/// FlowMatchEulerDiscreteScheduler: Euler steps on a rectified-flow ODE (SD3, Flux), sigma in [0, 1].
#include "schedulers/schedule_utils.h"

namespace tessera {

/// diffusers.FlowMatchEulerDiscreteScheduler: static `shift`, or dynamic shifting with `mu` passed to
/// set_timesteps (exponential or linear time shift), shift_terminal, Karras sigmas, invert_sigmas,
/// stochastic_sampling. Its forward process is `scale_noise`; add_noise does the same.
class FlowMatchEulerDiscreteScheduler : public Scheduler {
 public:
  explicit FlowMatchEulerDiscreteScheduler(SchedulerConfig cfg);
  std::string type() const override { return "FlowMatchEulerDiscreteScheduler"; }
  void set_timesteps(int64_t num_inference_steps, const SetTimestepsOptions& options = {}) override;
  SchedulerOutput step(const at::Tensor& model_output, double timestep, const at::Tensor& sample,
                       std::optional<at::Generator> generator = std::nullopt,
                       std::optional<at::Tensor> noise = std::nullopt) override;
  at::Tensor scale_noise(const at::Tensor& sample, const at::Tensor& timestep, const at::Tensor& noise) override;
  at::Tensor add_noise(const at::Tensor& original_samples, const at::Tensor& noise,
                       const at::Tensor& timesteps) override;
  double shift() const { return shift_; }
  void set_shift(double shift) { shift_ = shift; }
  bool use_dynamic_shifting() const { return use_dynamic_shifting_; }
  /// The config's resolution-dependent shift parameters (pipelines compute `mu` from them with calculate_shift).
  double base_shift() const { return base_shift_; }
  double max_shift() const { return max_shift_; }
  int64_t base_image_seq_len() const { return base_image_seq_len_; }
  int64_t max_image_seq_len() const { return max_image_seq_len_; }

 private:
  double time_shift(double mu, double sigma, double t) const;
  double shift_ = 1.0, sigma_min_ = 0.0, sigma_max_ = 1.0;
  double base_shift_ = 0.5, max_shift_ = 1.15;
  int64_t base_image_seq_len_ = 256, max_image_seq_len_ = 4096;
  bool use_dynamic_shifting_ = false, invert_sigmas_ = false, use_karras_sigmas_ = false, stochastic_sampling_ = false;
  std::optional<double> shift_terminal_;
  std::string time_shift_type_;
};

}  // namespace tessera
