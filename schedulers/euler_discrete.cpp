#include "schedulers/euler_discrete.h"

#include <cmath>

namespace tessera {

at::Tensor add_noise_sigmas(Scheduler&, const at::Tensor& sigmas, const at::Tensor& schedule_timesteps,
                            std::optional<int64_t> begin_index, std::optional<int64_t> step_index,
                            const at::Tensor& original_samples, const at::Tensor& noise, const at::Tensor& timesteps) {
  at::Tensor t = timesteps.flatten().to(at::kDouble);
  std::vector<int64_t> idx;
  for (int64_t i = 0; i < t.size(0); ++i) {
    if (!begin_index) {
      at::Tensor hits = (schedule_timesteps == t[i].item<double>()).nonzero();
      if (hits.size(0) == 0)
        throw ValidationError("add_noise: timestep " + std::to_string(t[i].item<double>()) +
                              " is not in the current schedule");
      idx.push_back(hits[hits.size(0) > 1 ? 1 : 0].item<int64_t>());
    } else {
      idx.push_back(step_index ? *step_index : *begin_index);
    }
  }
  at::Tensor s = sigmas.to(original_samples.options()).index_select(
      0, at::tensor(idx, at::kLong).to(original_samples.device()));
  return original_samples + noise * expand_like(s, original_samples);
}

EulerDiscreteScheduler::EulerDiscreteScheduler(SchedulerConfig cfg) {
  schedule_ = read_beta_schedule(cfg);
  const bool zero_snr = cfg.get_bool("rescale_betas_zero_snr", false);
  num_train_timesteps_ = schedule_.betas.size(0);
  prediction_type_ = cfg.get_choice("prediction_type", "epsilon", {"epsilon", "sample", "original_sample", "v_prediction"});
  interpolation_type_ = cfg.get_choice("interpolation_type", "linear", {"linear", "log_linear"});
  use_karras_sigmas_ = cfg.get_bool("use_karras_sigmas", false);
  if (cfg.get_bool("use_exponential_sigmas", false)) cfg.fail("use_exponential_sigmas", "is not supported yet");
  if (cfg.get_bool("use_beta_sigmas", false)) cfg.fail("use_beta_sigmas", "is not supported yet");
  sigma_min_ = cfg.get_optional_float("sigma_min");
  sigma_max_ = cfg.get_optional_float("sigma_max");
  timestep_spacing_ = cfg.get_choice("timestep_spacing", "linspace", {"linspace", "leading", "trailing"});
  if (cfg.get_choice("timestep_type", "discrete", {"discrete", "continuous"}) != "discrete")
    cfg.fail("timestep_type", "'continuous' is not supported yet");
  steps_offset_ = cfg.get_int("steps_offset", 0);
  final_sigmas_type_ = cfg.get_choice("final_sigmas_type", "zero", {"zero", "sigma_min"});
  cfg.finish();
  // Zero terminal SNR makes the last sigma infinite; diffusers caps ᾱ_T at 2^-24 instead.
  if (zero_snr) schedule_.alphas_cumprod[-1] = std::pow(2.0, -24);
  at::Tensor sigmas = ((1 - schedule_.alphas_cumprod) / schedule_.alphas_cumprod).pow(0.5).flip(0);
  sigmas_ = at::cat({sigmas, at::zeros({1}, at::kFloat)});
  std::vector<double> t = linspace(0, static_cast<double>(num_train_timesteps_ - 1), num_train_timesteps_);
  std::reverse(t.begin(), t.end());
  timesteps_ = to_float_tensor(t);
}

double EulerDiscreteScheduler::init_noise_sigma() const {
  const double max_sigma = sigmas_.max().item<float>();
  if (timestep_spacing_ == "linspace" || timestep_spacing_ == "trailing") return max_sigma;
  return static_cast<float>(std::sqrt(static_cast<float>(max_sigma * max_sigma + 1)));
}

void EulerDiscreteScheduler::set_timesteps(int64_t n, const SetTimestepsOptions& options) {
  if (options.sigmas) throw ValidationError(type() + ".set_timesteps takes no custom sigmas");
  if (options.mu) throw ValidationError("EulerDiscreteScheduler.set_timesteps takes no 'mu'");
  check_num_inference_steps(n);
  num_inference_steps_ = n;
  std::vector<double> t = spaced_timesteps(timestep_spacing_, n, num_train_timesteps_, steps_offset_);
  for (double& v : t) v = static_cast<float>(v);  // diffusers makes them float32 before interpolating
  std::vector<double> base = train_sigmas(schedule_.alphas_cumprod);
  std::vector<double> log_sigmas;
  for (double s : base) log_sigmas.push_back(std::log(s));
  std::vector<double> sigmas;
  if (interpolation_type_ == "linear") {
    for (double v : t) sigmas.push_back(interp_index(v, base));
  } else {
    at::Tensor ls = at::linspace(std::log(base.back()), std::log(base.front()), n + 1, at::kFloat).exp();
    for (int64_t i = 0; i < ls.size(0); ++i) sigmas.push_back(ls[i].item<float>());
  }
  if (use_karras_sigmas_) {
    sigmas = karras_sigmas(sigma_min_.value_or(sigmas.back()), sigma_max_.value_or(sigmas.front()), n);
    t.clear();
    for (double s : sigmas) t.push_back(sigma_to_t(s, log_sigmas));
  }
  sigmas.push_back(final_sigmas_type_ == "zero" ? 0.0 : base.front());
  sigmas_ = to_float_tensor(sigmas);
  timesteps_ = to_float_tensor(t);
  step_index_.reset();
  begin_index_.reset();
}

void EulerDiscreteScheduler::set_step_option(const std::string& name, double value) {
  if (name == "s_churn") s_churn_ = value;
  else if (name == "s_tmin") s_tmin_ = value;
  else if (name == "s_tmax") s_tmax_ = value;
  else if (name == "s_noise") s_noise_ = value;
  else Scheduler::set_step_option(name, value);
}

at::Tensor EulerDiscreteScheduler::scale_model_input(const at::Tensor& sample, double timestep) {
  init_step_index(timestep);
  at::Tensor sigma = sigmas_[*step_index_];
  return sample / (sigma.pow(2) + 1).pow(0.5);
}

SchedulerOutput EulerDiscreteScheduler::step(const at::Tensor& model_output, double timestep, const at::Tensor& sample_in,
                                             std::optional<at::Generator> generator, std::optional<at::Tensor> noise) {
  require_timesteps_set("step");
  init_step_index(timestep);
  if (*step_index_ + 1 >= sigmas_.size(0))
    throw ExecutionError("EulerDiscreteScheduler.step called more times than there are timesteps");
  at::Tensor sample = sample_in.to(at::kFloat);
  at::Tensor sigma = sigmas_[*step_index_];
  const double sigma_d = sigma.item<float>();
  const double gamma = (s_tmin_ <= sigma_d && sigma_d <= s_tmax_)
                           ? std::min(s_churn_ / static_cast<double>(sigmas_.size(0) - 1), std::sqrt(2.0) - 1)
                           : 0.0;
  at::Tensor sigma_hat = sigma * (gamma + 1);
  if (gamma > 0) {
    at::Tensor eps = step_noise(model_output, generator, noise, "EulerDiscreteScheduler.step") * s_noise_;
    sample = sample + eps * (sigma_hat.pow(2) - sigma.pow(2)).pow(0.5);
  }
  at::Tensor pred_original_sample;
  if (prediction_type_ == "epsilon") pred_original_sample = sample - sigma_hat * model_output;
  else if (prediction_type_ == "v_prediction")
    pred_original_sample = model_output * (-sigma / (sigma.pow(2) + 1).pow(0.5)) + sample / (sigma.pow(2) + 1);
  else pred_original_sample = model_output;
  at::Tensor derivative = (sample - pred_original_sample) / sigma_hat;
  at::Tensor dt = sigmas_[*step_index_ + 1] - sigma_hat;
  at::Tensor prev_sample = (sample + derivative * dt).to(model_output.scalar_type());
  *step_index_ += 1;
  return {prev_sample, pred_original_sample};
}

at::Tensor EulerDiscreteScheduler::add_noise(const at::Tensor& original_samples, const at::Tensor& noise,
                                             const at::Tensor& timesteps) {
  return add_noise_sigmas(*this, sigmas_, timesteps_, begin_index_, step_index_, original_samples, noise, timesteps);
}

}  // namespace tessera
