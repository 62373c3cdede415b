#include "schedulers/lcm.h"

#include <cmath>

#include "schedulers/ddim.h"

namespace tessera {

LCMScheduler::LCMScheduler(SchedulerConfig cfg) {
  schedule_ = read_beta_schedule(cfg, true, {0.00085, 0.012, "scaled_linear"});
  num_train_timesteps_ = schedule_.betas.size(0);
  original_inference_steps_ = cfg.get_int("original_inference_steps", 50);
  clip_sample_ = cfg.get_bool("clip_sample", false);
  clip_sample_range_ = cfg.get_float("clip_sample_range", 1.0);
  const bool set_alpha_to_one = cfg.get_bool("set_alpha_to_one", true);
  cfg.get_int("steps_offset", 0);  // not used by LCM's schedule
  prediction_type_ = cfg.get_choice("prediction_type", "epsilon", {"epsilon", "sample", "v_prediction"});
  thresholding_ = cfg.get_bool("thresholding", false);
  dynamic_thresholding_ratio_ = cfg.get_float("dynamic_thresholding_ratio", 0.995);
  sample_max_value_ = cfg.get_float("sample_max_value", 1.0);
  cfg.get_choice("timestep_spacing", "leading", {"linspace", "leading", "trailing"});  // not used by LCM
  timestep_scaling_ = cfg.get_float("timestep_scaling", 10.0);
  cfg.finish();
  if (original_inference_steps_ <= 0 || original_inference_steps_ > num_train_timesteps_)
    throw ValidationError("LCMScheduler: original_inference_steps must be in [1, num_train_timesteps]");
  final_alpha_cumprod_ = set_alpha_to_one ? at::scalar_tensor(1.0, at::kFloat) : schedule_.alphas_cumprod[0];
  timesteps_ = at::arange(num_train_timesteps_ - 1, -1, -1, at::kLong);
}

void LCMScheduler::set_timesteps(int64_t n, const SetTimestepsOptions& options) {
  if (options.sigmas) throw ValidationError(type() + ".set_timesteps takes no custom sigmas");
  if (options.mu) throw ValidationError("LCMScheduler.set_timesteps takes no 'mu'");
  check_num_inference_steps(n);
  if (n > original_inference_steps_)
    throw ValidationError("LCMScheduler: num_inference_steps (" + std::to_string(n) +
                          ") cannot be larger than original_inference_steps (" +
                          std::to_string(original_inference_steps_) + ")");
  // The LCM training schedule: every k-th timestep, k = num_train / original_steps; inference picks n of them.
  const int64_t k = num_train_timesteps_ / original_inference_steps_;
  std::vector<int64_t> origin;
  for (int64_t i = original_inference_steps_; i >= 1; --i) origin.push_back(i * k - 1);
  const int64_t m = static_cast<int64_t>(origin.size());
  std::vector<int64_t> t;
  for (int64_t i = 0; i < n; ++i) {
    // np.linspace(0, m, n, endpoint=False) floored
    const double idx = static_cast<double>(i) * (static_cast<double>(m) / static_cast<double>(n));
    t.push_back(origin[static_cast<size_t>(std::floor(idx))]);
  }
  timesteps_ = at::tensor(t, at::kLong);
  num_inference_steps_ = n;
  step_index_.reset();
  begin_index_.reset();
}

SchedulerOutput LCMScheduler::step(const at::Tensor& model_output, double timestep, const at::Tensor& sample,
                                   std::optional<at::Generator> generator, std::optional<at::Tensor> noise) {
  require_timesteps_set("step");
  init_step_index(timestep);
  const int64_t t = static_cast<int64_t>(timestep);
  const int64_t next = *step_index_ + 1;
  const int64_t prev_t = next < timesteps_.size(0) ? timesteps_[next].item<int64_t>() : t;
  at::Tensor alpha_prod_t = schedule_.alphas_cumprod[t];
  at::Tensor alpha_prod_t_prev = prev_t >= 0 ? schedule_.alphas_cumprod[prev_t] : final_alpha_cumprod_;
  at::Tensor beta_prod_t_prev = 1 - alpha_prod_t_prev;
  // Boundary-condition scalings of the consistency function (sigma_data = 0.5).
  at::Tensor scaled = at::scalar_tensor(t, at::kLong) * timestep_scaling_;
  at::Tensor c_skip = 0.25 / (scaled.pow(2) + 0.25);
  at::Tensor c_out = scaled / (scaled.pow(2) + 0.25).pow(0.5);
  at::Tensor x0 = ddim_predict(prediction_type_, model_output, sample, alpha_prod_t).first;
  if (thresholding_) x0 = threshold_sample(x0, dynamic_thresholding_ratio_, sample_max_value_);
  else if (clip_sample_) x0 = x0.clamp(-clip_sample_range_, clip_sample_range_);
  at::Tensor denoised = c_out * x0 + c_skip * sample;
  at::Tensor prev = denoised;
  if (*step_index_ != num_inference_steps_ - 1) {
    at::Tensor z = step_noise(denoised, generator, noise, "LCMScheduler.step");
    prev = alpha_prod_t_prev.sqrt() * denoised + beta_prod_t_prev.sqrt() * z;
  }
  *step_index_ += 1;
  return {prev, denoised};
}

at::Tensor LCMScheduler::add_noise(const at::Tensor& original_samples, const at::Tensor& noise,
                                   const at::Tensor& timesteps) {
  return add_noise_cumprod(schedule_.alphas_cumprod, original_samples, noise, timesteps);
}

}  // namespace tessera
