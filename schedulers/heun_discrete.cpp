#include "schedulers/heun_discrete.h"

#include <cmath>

#include "schedulers/euler_discrete.h"

namespace tessera {

void discrete_sigma_schedule(const BetaSchedule& schedule, const std::string& spacing, int64_t n, int64_t steps_offset,
                             bool karras, std::vector<double>& timesteps, std::vector<double>& sigmas) {
  const int64_t num_train = schedule.betas.size(0);
  timesteps = spaced_timesteps(spacing, n, num_train, steps_offset);
  for (double& v : timesteps) v = static_cast<float>(v);
  std::vector<double> base = train_sigmas(schedule.alphas_cumprod), log_sigmas;
  for (double s : base) log_sigmas.push_back(std::log(s));
  sigmas.clear();
  for (double v : timesteps) sigmas.push_back(interp_index(v, base));
  if (karras) {
    sigmas = karras_sigmas(sigmas.back(), sigmas.front(), n);
    timesteps.clear();
    for (double s : sigmas) timesteps.push_back(sigma_to_t(s, log_sigmas));
  }
}

HeunDiscreteScheduler::HeunDiscreteScheduler(SchedulerConfig cfg) {
  schedule_ = read_beta_schedule(cfg, false, {0.00085, 0.012, "linear"});
  num_train_timesteps_ = schedule_.betas.size(0);
  prediction_type_ = cfg.get_choice("prediction_type", "epsilon", {"epsilon", "v_prediction", "sample"});
  use_karras_sigmas_ = cfg.get_bool("use_karras_sigmas", false);
  if (cfg.get_bool("use_exponential_sigmas", false)) cfg.fail("use_exponential_sigmas", "is not supported yet");
  if (cfg.get_bool("use_beta_sigmas", false)) cfg.fail("use_beta_sigmas", "is not supported yet");
  clip_sample_ = cfg.get_bool("clip_sample", false);
  clip_sample_range_ = cfg.get_float("clip_sample_range", 1.0);
  timestep_spacing_ = cfg.get_choice("timestep_spacing", "linspace", {"linspace", "leading", "trailing"});
  steps_offset_ = cfg.get_int("steps_offset", 0);
  cfg.finish();
  set_timesteps(num_train_timesteps_);
  num_inference_steps_ = 0;  // as diffusers: a schedule exists, but set_timesteps was not called
}

double HeunDiscreteScheduler::init_noise_sigma() const {
  const float max_sigma = sigmas_.max().item<float>();
  if (timestep_spacing_ == "linspace" || timestep_spacing_ == "trailing") return max_sigma;
  return std::sqrt(max_sigma * max_sigma + 1.0f);
}

void HeunDiscreteScheduler::set_timesteps(int64_t n, const SetTimestepsOptions& options) {
  if (options.sigmas) throw ValidationError(type() + ".set_timesteps takes no custom sigmas");
  if (options.mu) throw ValidationError("HeunDiscreteScheduler.set_timesteps takes no 'mu'");
  check_num_inference_steps(n);
  num_inference_steps_ = n;
  std::vector<double> t, s;
  discrete_sigma_schedule(schedule_, timestep_spacing_, n, steps_offset_, use_karras_sigmas_, t, s);
  s.push_back(0.0);
  at::Tensor sig = to_float_tensor(s);
  // Every sigma but the first and last is visited twice (predictor, then corrector).
  sigmas_ = at::cat({sig.slice(0, 0, 1), sig.slice(0, 1, -1).repeat_interleave(2), sig.slice(0, -1)});
  at::Tensor ts = to_float_tensor(t);
  timesteps_ = at::cat({ts.slice(0, 0, 1), ts.slice(0, 1).repeat_interleave(2)});
  prev_derivative_ = dt_ = first_sample_ = at::Tensor();
  step_index_.reset();
  begin_index_.reset();
}

at::Tensor HeunDiscreteScheduler::scale_model_input(const at::Tensor& sample, double timestep) {
  init_step_index(timestep);
  at::Tensor sigma = sigmas_[*step_index_];
  return sample / (sigma.pow(2) + 1).pow(0.5);
}

SchedulerOutput HeunDiscreteScheduler::step(const at::Tensor& model_output, double timestep, const at::Tensor& sample_in,
                                            std::optional<at::Generator>, std::optional<at::Tensor>) {
  require_timesteps_set("step");
  init_step_index(timestep);
  const int64_t i = *step_index_;
  if (i + 1 >= sigmas_.size(0))
    throw ExecutionError("HeunDiscreteScheduler.step called more times than there are timesteps");
  const bool first = !dt_.defined();
  at::Tensor sigma = first ? sigmas_[i] : sigmas_[i - 1];
  at::Tensor sigma_next = first ? sigmas_[i + 1] : sigmas_[i];
  at::Tensor sigma_hat = sigma;  // gamma = 0
  at::Tensor sigma_input = first ? sigma_hat : sigma_next;
  at::Tensor x0;
  if (prediction_type_ == "epsilon") x0 = sample_in - sigma_input * model_output;
  else if (prediction_type_ == "v_prediction")
    x0 = model_output * (-sigma_input / (sigma_input.pow(2) + 1).pow(0.5)) + sample_in / (sigma_input.pow(2) + 1);
  else x0 = model_output;
  if (clip_sample_) x0 = x0.clamp(-clip_sample_range_, clip_sample_range_);
  at::Tensor derivative, dt, sample = sample_in;
  if (first) {
    derivative = (sample - x0) / sigma_hat;
    dt = sigma_next - sigma_hat;
    prev_derivative_ = derivative;
    dt_ = dt;
    first_sample_ = sample;
  } else {
    // Heun: average the derivatives at both ends, step again from the first call's sample.
    derivative = (prev_derivative_ + (sample - x0) / sigma_next) / 2;
    dt = dt_;
    sample = first_sample_;
    prev_derivative_ = dt_ = first_sample_ = at::Tensor();
  }
  *step_index_ += 1;
  return {sample + derivative * dt, x0};
}

at::Tensor HeunDiscreteScheduler::add_noise(const at::Tensor& original_samples, const at::Tensor& noise,
                                            const at::Tensor& timesteps) {
  return add_noise_sigmas(*this, sigmas_, timesteps_, begin_index_, step_index_, original_samples, noise, timesteps);
}

}  // namespace tessera
