#include "schedulers/ddpm.h"

#include "schedulers/ddim.h"

namespace tessera {

DDPMScheduler::DDPMScheduler(SchedulerConfig cfg) {
  schedule_ = read_beta_schedule(cfg);
  num_train_timesteps_ = schedule_.betas.size(0);
  variance_type_ = cfg.get_choice("variance_type", "fixed_small",
                                  {"fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned",
                                   "learned_range"});
  if (variance_type_ == "learned" || variance_type_ == "learned_range")
    cfg.fail("variance_type", "'" + variance_type_ + "' (a model-predicted variance) is not supported yet");
  clip_sample_ = cfg.get_bool("clip_sample", true);
  prediction_type_ = cfg.get_choice("prediction_type", "epsilon", {"epsilon", "sample", "v_prediction"});
  thresholding_ = cfg.get_bool("thresholding", false);
  dynamic_thresholding_ratio_ = cfg.get_float("dynamic_thresholding_ratio", 0.995);
  clip_sample_range_ = cfg.get_float("clip_sample_range", 1.0);
  sample_max_value_ = cfg.get_float("sample_max_value", 1.0);
  timestep_spacing_ = cfg.get_choice("timestep_spacing", "leading", {"linspace", "leading", "trailing"});
  steps_offset_ = cfg.get_int("steps_offset", 0);
  cfg.finish();
  timesteps_ = at::arange(num_train_timesteps_ - 1, -1, -1, at::kLong);
}

void DDPMScheduler::set_timesteps(int64_t n, const SetTimestepsOptions& options) {
  if (options.sigmas) throw ValidationError(type() + ".set_timesteps takes no custom sigmas");
  if (options.mu) throw ValidationError("DDPMScheduler.set_timesteps takes no 'mu'");
  check_num_inference_steps(n);
  num_inference_steps_ = n;
  timesteps_ = to_long_tensor(spaced_timesteps(timestep_spacing_, n, num_train_timesteps_, steps_offset_));
}

int64_t DDPMScheduler::previous_timestep(int64_t t) const {
  // The next entry of the schedule, -1 after the last.
  at::Tensor hits = (timesteps_ == t).nonzero();
  if (hits.size(0) == 0)
    throw ValidationError("DDPMScheduler.step: timestep " + std::to_string(t) + " is not in the current schedule");
  const int64_t index = hits[0].item<int64_t>();
  return index == timesteps_.size(0) - 1 ? -1 : timesteps_[index + 1].item<int64_t>();
}

SchedulerOutput DDPMScheduler::step(const at::Tensor& model_output, double timestep, const at::Tensor& sample,
                                    std::optional<at::Generator> generator, std::optional<at::Tensor> noise) {
  require_timesteps_set("step");
  const int64_t t = static_cast<int64_t>(timestep);
  const int64_t prev_t = previous_timestep(t);
  at::Tensor one = at::scalar_tensor(1.0, at::kFloat);
  at::Tensor alpha_prod_t = schedule_.alphas_cumprod[t];
  at::Tensor alpha_prod_t_prev = prev_t >= 0 ? schedule_.alphas_cumprod[prev_t] : one;
  at::Tensor beta_prod_t = 1 - alpha_prod_t;
  at::Tensor beta_prod_t_prev = 1 - alpha_prod_t_prev;
  at::Tensor current_alpha_t = alpha_prod_t / alpha_prod_t_prev;
  at::Tensor current_beta_t = 1 - current_alpha_t;

  at::Tensor pred_original_sample = ddim_predict(prediction_type_, model_output, sample, alpha_prod_t).first;
  if (thresholding_)
    pred_original_sample = threshold_sample(pred_original_sample, dynamic_thresholding_ratio_, sample_max_value_);
  else if (clip_sample_)
    pred_original_sample = pred_original_sample.clamp(-clip_sample_range_, clip_sample_range_);

  // Formula (7) of the DDPM paper: the posterior mean.
  at::Tensor x0_coeff = alpha_prod_t_prev.pow(0.5) * current_beta_t / beta_prod_t;
  at::Tensor sample_coeff = current_alpha_t.pow(0.5) * beta_prod_t_prev / beta_prod_t;
  at::Tensor prev_sample = x0_coeff * pred_original_sample + sample_coeff * sample;
  if (t > 0) {
    at::Tensor z = step_noise(model_output, generator, noise, "DDPMScheduler.step");
    at::Tensor variance = at::clamp_min((1 - alpha_prod_t_prev) / (1 - alpha_prod_t) * current_beta_t, 1e-20);
    at::Tensor scale;
    if (variance_type_ == "fixed_small") scale = variance.pow(0.5);
    else if (variance_type_ == "fixed_small_log") scale = at::exp(0.5 * at::log(variance));  // already a std
    else if (variance_type_ == "fixed_large") scale = current_beta_t.pow(0.5);
    else scale = at::log(current_beta_t).pow(0.5);  // fixed_large_log, as diffusers computes it
    prev_sample = prev_sample + scale * z;
  }
  return {prev_sample, pred_original_sample};
}

at::Tensor DDPMScheduler::add_noise(const at::Tensor& original_samples, const at::Tensor& noise,
                                    const at::Tensor& timesteps) {
  return add_noise_cumprod(schedule_.alphas_cumprod, original_samples, noise, timesteps);
}

}  // namespace tessera
