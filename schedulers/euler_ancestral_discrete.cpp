#include "schedulers/euler_ancestral_discrete.h"

#include <cmath>

#include "schedulers/euler_discrete.h"

namespace tessera {

EulerAncestralDiscreteScheduler::EulerAncestralDiscreteScheduler(SchedulerConfig cfg) {
  schedule_ = read_beta_schedule(cfg);
  const bool zero_snr = cfg.get_bool("rescale_betas_zero_snr", false);
  num_train_timesteps_ = schedule_.betas.size(0);
  prediction_type_ = cfg.get_choice("prediction_type", "epsilon", {"epsilon", "v_prediction"});
  timestep_spacing_ = cfg.get_choice("timestep_spacing", "linspace", {"linspace", "leading", "trailing"});
  steps_offset_ = cfg.get_int("steps_offset", 0);
  cfg.finish();
  if (zero_snr) schedule_.alphas_cumprod[-1] = std::pow(2.0, -24);  // keeps the first sigma finite
  std::vector<double> s = train_sigmas(schedule_.alphas_cumprod);
  std::reverse(s.begin(), s.end());
  s.push_back(0.0);
  sigmas_ = to_float_tensor(s);
  std::vector<double> t = linspace(0, static_cast<double>(num_train_timesteps_ - 1), num_train_timesteps_);
  std::reverse(t.begin(), t.end());
  timesteps_ = at::tensor(t, at::kDouble);
}

double EulerAncestralDiscreteScheduler::init_noise_sigma() const {
  const float max_sigma = sigmas_.max().item<float>();
  if (timestep_spacing_ == "linspace" || timestep_spacing_ == "trailing") return max_sigma;
  return std::sqrt(max_sigma * max_sigma + 1.0f);
}

void EulerAncestralDiscreteScheduler::set_timesteps(int64_t n, const SetTimestepsOptions& options) {
  if (options.sigmas) throw ValidationError(type() + ".set_timesteps takes no custom sigmas");
  if (options.mu) throw ValidationError("EulerAncestralDiscreteScheduler.set_timesteps takes no 'mu'");
  check_num_inference_steps(n);
  num_inference_steps_ = n;
  std::vector<double> t = spaced_timesteps(timestep_spacing_, n, num_train_timesteps_, steps_offset_);
  for (double& v : t) v = static_cast<float>(v);
  std::vector<double> base = train_sigmas(schedule_.alphas_cumprod), sigmas;
  for (double v : t) sigmas.push_back(interp_index(v, base));
  sigmas.push_back(0.0);
  sigmas_ = to_float_tensor(sigmas);
  timesteps_ = to_float_tensor(t);
  step_index_.reset();
  begin_index_.reset();
}

at::Tensor EulerAncestralDiscreteScheduler::scale_model_input(const at::Tensor& sample, double timestep) {
  init_step_index(timestep);
  at::Tensor sigma = sigmas_[*step_index_];
  return sample / (sigma.pow(2) + 1).pow(0.5);
}

SchedulerOutput EulerAncestralDiscreteScheduler::step(const at::Tensor& model_output, double timestep,
                                                      const at::Tensor& sample_in,
                                                      std::optional<at::Generator> generator,
                                                      std::optional<at::Tensor> noise) {
  require_timesteps_set("step");
  init_step_index(timestep);
  if (*step_index_ + 1 >= sigmas_.size(0))
    throw ExecutionError("EulerAncestralDiscreteScheduler.step called more times than there are timesteps");
  at::Tensor sigma = sigmas_[*step_index_];
  at::Tensor sample = sample_in.to(at::kFloat);
  at::Tensor pred_original_sample =
      prediction_type_ == "epsilon"
          ? sample - sigma * model_output
          : model_output * (-sigma / (sigma.pow(2) + 1).pow(0.5)) + sample / (sigma.pow(2) + 1);
  at::Tensor sigma_from = sigma, sigma_to = sigmas_[*step_index_ + 1];
  // Split the step into a deterministic part down to sigma_down and fresh noise of size sigma_up.
  at::Tensor sigma_up = (sigma_to.pow(2) * (sigma_from.pow(2) - sigma_to.pow(2)) / sigma_from.pow(2)).pow(0.5);
  at::Tensor sigma_down = (sigma_to.pow(2) - sigma_up.pow(2)).pow(0.5);
  at::Tensor derivative = (sample - pred_original_sample) / sigma;
  at::Tensor prev_sample = sample + derivative * (sigma_down - sigma);
  at::Tensor z = step_noise(model_output, generator, noise, "EulerAncestralDiscreteScheduler.step");
  prev_sample = (prev_sample + z * sigma_up).to(model_output.scalar_type());
  *step_index_ += 1;
  return {prev_sample, pred_original_sample};
}

at::Tensor EulerAncestralDiscreteScheduler::add_noise(const at::Tensor& original_samples, const at::Tensor& noise,
                                                      const at::Tensor& timesteps) {
  return add_noise_sigmas(*this, sigmas_, timesteps_, begin_index_, step_index_, original_samples, noise, timesteps);
}

}  // namespace tessera
