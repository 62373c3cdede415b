#include "schedulers/flow_match_euler_discrete.h"

#include <cmath>

namespace tessera {

FlowMatchEulerDiscreteScheduler::FlowMatchEulerDiscreteScheduler(SchedulerConfig cfg) {
  num_train_timesteps_ = cfg.get_int("num_train_timesteps", 1000);
  if (num_train_timesteps_ <= 0) cfg.fail("num_train_timesteps", "must be positive");
  shift_ = cfg.get_float("shift", 1.0);
  use_dynamic_shifting_ = cfg.get_bool("use_dynamic_shifting", false);
  // Used by pipelines to compute mu from the image size (calculate_shift); kept for them, not used here.
  base_shift_ = cfg.get_float("base_shift", 0.5);
  max_shift_ = cfg.get_float("max_shift", 1.15);
  base_image_seq_len_ = cfg.get_int("base_image_seq_len", 256);
  max_image_seq_len_ = cfg.get_int("max_image_seq_len", 4096);
  if (max_image_seq_len_ == base_image_seq_len_) cfg.fail("max_image_seq_len", "must differ from base_image_seq_len");
  invert_sigmas_ = cfg.get_bool("invert_sigmas", false);
  shift_terminal_ = cfg.get_optional_float("shift_terminal");
  use_karras_sigmas_ = cfg.get_bool("use_karras_sigmas", false);
  if (cfg.get_bool("use_exponential_sigmas", false)) cfg.fail("use_exponential_sigmas", "is not supported yet");
  if (cfg.get_bool("use_beta_sigmas", false)) cfg.fail("use_beta_sigmas", "is not supported yet");
  time_shift_type_ = cfg.get_choice("time_shift_type", "exponential", {"exponential", "linear"});
  stochastic_sampling_ = cfg.get_bool("stochastic_sampling", false);
  cfg.finish();
  const double n = static_cast<double>(num_train_timesteps_);
  at::Tensor t = at::linspace(1, n, num_train_timesteps_, at::kFloat).flip(0);
  at::Tensor sigmas = t / n;
  if (!use_dynamic_shifting_) sigmas = shift_ * sigmas / (1 + (shift_ - 1) * sigmas);
  timesteps_ = sigmas * n;
  sigmas_ = sigmas;
  sigma_min_ = sigmas[-1].item<float>();
  sigma_max_ = sigmas[0].item<float>();
}

double FlowMatchEulerDiscreteScheduler::time_shift(double mu, double sigma, double t) const {
  if (time_shift_type_ == "exponential") return std::exp(mu) / (std::exp(mu) + std::pow(1 / t - 1, sigma));
  return mu / (mu + std::pow(1 / t - 1, sigma));
}

void FlowMatchEulerDiscreteScheduler::set_timesteps(int64_t n, const SetTimestepsOptions& options) {
  if (options.sigmas) {
    // diffusers: sigmas = np.array(sigmas).astype(np.float32); num_inference_steps = len(sigmas)
    n = static_cast<int64_t>(options.sigmas->size());
    if (n == 0) throw ValidationError("FlowMatchEulerDiscreteScheduler: custom sigmas are empty");
    for (double s : *options.sigmas)
      if (!(s > 0.0 && s <= 1.0))
        throw ValidationError("FlowMatchEulerDiscreteScheduler: custom sigmas must lie in (0, 1], got " +
                              std::to_string(s));
  }
  check_num_inference_steps(n);
  if (use_dynamic_shifting_ && !options.mu)
    throw ValidationError("FlowMatchEulerDiscreteScheduler: use_dynamic_shifting needs 'mu' in set_timesteps");
  num_inference_steps_ = n;
  const double N = static_cast<double>(num_train_timesteps_);
  std::vector<double> sigmas;
  if (options.sigmas) {
    for (double s : *options.sigmas) sigmas.push_back(static_cast<float>(s));
  } else {
    for (double t : linspace(sigma_max_ * N, sigma_min_ * N, n)) sigmas.push_back(t / N);
  }
  for (double& s : sigmas) s = use_dynamic_shifting_ ? time_shift(*options.mu, 1.0, s) : shift_ * s / (1 + (shift_ - 1) * s);
  if (shift_terminal_ && *shift_terminal_ != 0.0) {
    // Stretch so that the last sigma lands exactly on shift_terminal.
    const double scale = (1 - sigmas.back()) / (1 - *shift_terminal_);
    for (double& s : sigmas) s = 1 - (1 - s) / scale;
  }
  if (use_karras_sigmas_) sigmas = karras_sigmas(sigmas.back(), sigmas.front(), n);
  at::Tensor s = to_float_tensor(sigmas);
  at::Tensor ts = s * N;
  if (invert_sigmas_) {
    s = 1.0 - s;
    ts = s * N;
    s = at::cat({s, at::ones({1}, at::kFloat)});
  } else {
    s = at::cat({s, at::zeros({1}, at::kFloat)});
  }
  timesteps_ = ts;
  sigmas_ = s;
  step_index_.reset();
  begin_index_.reset();
}

SchedulerOutput FlowMatchEulerDiscreteScheduler::step(const at::Tensor& model_output, double timestep,
                                                      const at::Tensor& sample_in,
                                                      std::optional<at::Generator> generator,
                                                      std::optional<at::Tensor> noise) {
  require_timesteps_set("step");
  init_step_index(timestep);
  if (*step_index_ + 1 >= sigmas_.size(0))
    throw ExecutionError("FlowMatchEulerDiscreteScheduler.step called more times than there are timesteps");
  at::Tensor sample = sample_in.to(at::kFloat);
  at::Tensor sigma = sigmas_[*step_index_], sigma_next = sigmas_[*step_index_ + 1];
  at::Tensor prev;
  if (stochastic_sampling_) {
    at::Tensor x0 = sample - sigma * model_output;
    at::Tensor z = step_noise(sample, generator, noise, "FlowMatchEulerDiscreteScheduler.step");
    prev = (1.0 - sigma_next) * x0 + sigma_next * z;
  } else {
    prev = sample + (sigma_next - sigma) * model_output;
  }
  *step_index_ += 1;
  return {prev.to(model_output.scalar_type()), at::Tensor()};
}

at::Tensor FlowMatchEulerDiscreteScheduler::scale_noise(const at::Tensor& sample, const at::Tensor& timestep,
                                                        const at::Tensor& noise) {
  require_timesteps_set("scale_noise");
  at::Tensor t = timestep.flatten().to(at::kDouble);
  std::vector<int64_t> idx;
  for (int64_t k = 0; k < t.size(0); ++k)
    idx.push_back(!begin_index_ ? index_for_timestep(t[k].item<double>()) : (step_index_ ? *step_index_ : *begin_index_));
  at::Tensor sigma =
      expand_like(sigmas_.to(sample.options()).index_select(0, at::tensor(idx, at::kLong)), sample);
  return sigma * noise + (1.0 - sigma) * sample;
}

at::Tensor FlowMatchEulerDiscreteScheduler::add_noise(const at::Tensor& original_samples, const at::Tensor& noise,
                                                      const at::Tensor& timesteps) {
  return scale_noise(original_samples, timesteps, noise);
}

}  // namespace tessera
