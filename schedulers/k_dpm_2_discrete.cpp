#include "schedulers/k_dpm_2_discrete.h"

#include <cmath>

#include "schedulers/euler_discrete.h"
#include "schedulers/heun_discrete.h"

namespace tessera {

KDPM2DiscreteScheduler::KDPM2DiscreteScheduler(SchedulerConfig cfg) {
  schedule_ = read_beta_schedule(cfg, false, {0.00085, 0.012, "linear"});
  num_train_timesteps_ = schedule_.betas.size(0);
  use_karras_sigmas_ = cfg.get_bool("use_karras_sigmas", false);
  if (cfg.get_bool("use_exponential_sigmas", false)) cfg.fail("use_exponential_sigmas", "is not supported yet");
  if (cfg.get_bool("use_beta_sigmas", false)) cfg.fail("use_beta_sigmas", "is not supported yet");
  prediction_type_ = cfg.get_choice("prediction_type", "epsilon", {"epsilon", "v_prediction"});
  timestep_spacing_ = cfg.get_choice("timestep_spacing", "linspace", {"linspace", "leading", "trailing"});
  steps_offset_ = cfg.get_int("steps_offset", 0);
  cfg.finish();
  set_timesteps(num_train_timesteps_);
  num_inference_steps_ = 0;
}

double KDPM2DiscreteScheduler::init_noise_sigma() const {
  const float max_sigma = sigmas_.max().item<float>();
  if (timestep_spacing_ == "linspace" || timestep_spacing_ == "trailing") return max_sigma;
  return std::sqrt(max_sigma * max_sigma + 1.0f);
}

void KDPM2DiscreteScheduler::set_timesteps(int64_t n, const SetTimestepsOptions& options) {
  if (options.sigmas) throw ValidationError(type() + ".set_timesteps takes no custom sigmas");
  if (options.mu) throw ValidationError("KDPM2DiscreteScheduler.set_timesteps takes no 'mu'");
  check_num_inference_steps(n);
  num_inference_steps_ = n;
  std::vector<double> t, s;
  discrete_sigma_schedule(schedule_, timestep_spacing_, n, steps_offset_, use_karras_sigmas_, t, s);
  if (use_karras_sigmas_)
    for (double& v : t) v = std::nearbyint(v);
  std::vector<double> log_sigmas;
  for (double b : train_sigmas(schedule_.alphas_cumprod)) log_sigmas.push_back(std::log(b));
  s.push_back(0.0);
  at::Tensor sig = to_float_tensor(s);
  // Midpoints in log-sigma (the first is meaningless and never used).
  at::Tensor interpol = sig.log().lerp(sig.roll(1).log(), 0.5).exp();
  sigmas_ = at::cat({sig.slice(0, 0, 1), sig.slice(0, 1).repeat_interleave(2), sig.slice(0, -1)});
  sigmas_interpol_ = at::cat({interpol.slice(0, 0, 1), interpol.slice(0, 1).repeat_interleave(2), interpol.slice(0, -1)});
  std::vector<double> all = {t[0]};
  for (size_t i = 1; i < t.size(); ++i) {
    all.push_back(sigma_to_t(interpol[static_cast<int64_t>(i)].item<float>(), log_sigmas));
    all.push_back(t[i]);
  }
  timesteps_ = to_float_tensor(all);
  first_sample_ = at::Tensor();
  step_index_.reset();
  begin_index_.reset();
}

at::Tensor KDPM2DiscreteScheduler::scale_model_input(const at::Tensor& sample, double timestep) {
  init_step_index(timestep);
  at::Tensor sigma = !first_sample_.defined() ? sigmas_[*step_index_] : sigmas_interpol_[*step_index_];
  return sample / (sigma.pow(2) + 1).pow(0.5);
}

SchedulerOutput KDPM2DiscreteScheduler::step(const at::Tensor& model_output, double timestep,
                                             const at::Tensor& sample_in, std::optional<at::Generator>,
                                             std::optional<at::Tensor>) {
  require_timesteps_set("step");
  init_step_index(timestep);
  const int64_t i = *step_index_;
  if (i + 1 >= sigmas_.size(0))
    throw ExecutionError("KDPM2DiscreteScheduler.step called more times than there are timesteps");
  const bool first = !first_sample_.defined();
  at::Tensor sigma = first ? sigmas_[i] : sigmas_[i - 1];
  at::Tensor sigma_interpol = first ? sigmas_interpol_[i + 1] : sigmas_interpol_[i];
  at::Tensor sigma_next = first ? sigmas_[i + 1] : sigmas_[i];
  at::Tensor sigma_hat = sigma;  // gamma = 0
  at::Tensor sigma_input = first ? sigma_hat : sigma_interpol;
  at::Tensor x0 = prediction_type_ == "epsilon"
                      ? sample_in - sigma_input * model_output
                      : model_output * (-sigma_input / (sigma_input.pow(2) + 1).pow(0.5)) +
                            sample_in / (sigma_input.pow(2) + 1);
  at::Tensor derivative, dt, sample = sample_in;
  if (first) {
    // Euler to the midpoint sigma; the second call steps the whole way with the midpoint derivative.
    derivative = (sample - x0) / sigma_hat;
    dt = sigma_interpol - sigma_hat;
    first_sample_ = sample;
  } else {
    derivative = (sample - x0) / sigma_interpol;
    dt = sigma_next - sigma_hat;
    sample = first_sample_;
    first_sample_ = at::Tensor();
  }
  *step_index_ += 1;
  return {sample + derivative * dt, x0};
}

at::Tensor KDPM2DiscreteScheduler::add_noise(const at::Tensor& original_samples, const at::Tensor& noise,
                                             const at::Tensor& timesteps) {
  return add_noise_sigmas(*this, sigmas_, timesteps_, begin_index_, step_index_, original_samples, noise, timesteps);
}

}  // namespace tessera
