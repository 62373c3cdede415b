#include "schedulers/lms_discrete.h"

#include <cmath>

#include "schedulers/euler_discrete.h"
#include "schedulers/heun_discrete.h"

namespace tessera {

LMSDiscreteScheduler::LMSDiscreteScheduler(SchedulerConfig cfg) {
  schedule_ = read_beta_schedule(cfg, false);
  num_train_timesteps_ = schedule_.betas.size(0);
  use_karras_sigmas_ = cfg.get_bool("use_karras_sigmas", false);
  if (cfg.get_bool("use_exponential_sigmas", false)) cfg.fail("use_exponential_sigmas", "is not supported yet");
  if (cfg.get_bool("use_beta_sigmas", false)) cfg.fail("use_beta_sigmas", "is not supported yet");
  prediction_type_ = cfg.get_choice("prediction_type", "epsilon", {"epsilon", "v_prediction", "sample"});
  timestep_spacing_ = cfg.get_choice("timestep_spacing", "linspace", {"linspace", "leading", "trailing"});
  steps_offset_ = cfg.get_int("steps_offset", 0);
  cfg.finish();
  std::vector<double> s = train_sigmas(schedule_.alphas_cumprod);
  std::reverse(s.begin(), s.end());
  s.push_back(0.0);
  sigmas_ = to_float_tensor(s);
  std::vector<double> t = linspace(0, static_cast<double>(num_train_timesteps_ - 1), num_train_timesteps_);
  std::reverse(t.begin(), t.end());
  timesteps_ = to_float_tensor(t);
}

double LMSDiscreteScheduler::init_noise_sigma() const {
  const float max_sigma = sigmas_.max().item<float>();
  if (timestep_spacing_ == "linspace" || timestep_spacing_ == "trailing") return max_sigma;
  return std::sqrt(max_sigma * max_sigma + 1.0f);
}

void LMSDiscreteScheduler::set_timesteps(int64_t n, const SetTimestepsOptions& options) {
  if (options.sigmas) throw ValidationError(type() + ".set_timesteps takes no custom sigmas");
  if (options.mu) throw ValidationError("LMSDiscreteScheduler.set_timesteps takes no 'mu'");
  check_num_inference_steps(n);
  num_inference_steps_ = n;
  std::vector<double> t, s;
  discrete_sigma_schedule(schedule_, timestep_spacing_, n, steps_offset_, use_karras_sigmas_, t, s);
  s.push_back(0.0);
  sigmas_ = to_float_tensor(s);
  sigma_values_.clear();
  for (int64_t i = 0; i < sigmas_.size(0); ++i) sigma_values_.push_back(sigmas_[i].item<float>());
  timesteps_ = to_float_tensor(t);
  derivatives_.clear();
  step_index_.reset();
  begin_index_.reset();
}

void LMSDiscreteScheduler::set_step_option(const std::string& name, double value) {
  if (name == "order" && value >= 1 && value == std::floor(value)) order_ = static_cast<int64_t>(value);
  else Scheduler::set_step_option(name, value);
}

double LMSDiscreteScheduler::lms_coefficient(int64_t order, int64_t t, int64_t current_order) const {
  // ∫_{σ_t}^{σ_{t+1}} of the Lagrange basis polynomial of σ_{t-current_order} over σ_t … σ_{t-order+1}.
  auto basis = [&](double tau) {
    double prod = 1.0;
    for (int64_t k = 0; k < order; ++k) {
      if (k == current_order) continue;
      prod *= (tau - sigma_values_[t - k]) / (sigma_values_[t - current_order] - sigma_values_[t - k]);
    }
    return prod;
  };
  // 5-point Gauss-Legendre: exact for degree <= 9, the basis has degree <= 3.
  static const double x[5] = {0.0, -0.5384693101056831, 0.5384693101056831, -0.9061798459386640, 0.9061798459386640};
  static const double w[5] = {0.5688888888888889, 0.4786286704993665, 0.4786286704993665, 0.2369268850561891,
                              0.2369268850561891};
  const double a = sigma_values_[t], b = sigma_values_[t + 1];
  const double half = (b - a) / 2, mid = (a + b) / 2;
  double sum = 0.0;
  for (int k = 0; k < 5; ++k) sum += w[k] * basis(mid + half * x[k]);
  return sum * half;
}

at::Tensor LMSDiscreteScheduler::scale_model_input(const at::Tensor& sample, double timestep) {
  init_step_index(timestep);
  at::Tensor sigma = sigmas_[*step_index_];
  return sample / (sigma.pow(2) + 1).pow(0.5);
}

SchedulerOutput LMSDiscreteScheduler::step(const at::Tensor& model_output, double timestep, const at::Tensor& sample,
                                           std::optional<at::Generator>, std::optional<at::Tensor>) {
  require_timesteps_set("step");
  init_step_index(timestep);
  const int64_t i = *step_index_;
  if (i + 1 >= sigmas_.size(0))
    throw ExecutionError("LMSDiscreteScheduler.step called more times than there are timesteps");
  at::Tensor sigma = sigmas_[i];
  at::Tensor x0;
  if (prediction_type_ == "epsilon") x0 = sample - sigma * model_output;
  else if (prediction_type_ == "v_prediction")
    x0 = model_output * (-sigma / (sigma.pow(2) + 1).pow(0.5)) + sample / (sigma.pow(2) + 1);
  else x0 = model_output;
  derivatives_.push_back((sample - x0) / sigma);
  if (static_cast<int64_t>(derivatives_.size()) > order_) derivatives_.erase(derivatives_.begin());
  const int64_t order = std::min(i + 1, order_);
  // Newest derivative first, as diffusers zips the coefficients with reversed(derivatives). zip stops at the shorter
  // list: a run that starts mid-schedule (image2image's begin index) has fewer derivatives than `order`.
  const int64_t terms = std::min<int64_t>(order, static_cast<int64_t>(derivatives_.size()));
  at::Tensor acc;
  for (int64_t k = 0; k < terms; ++k) {
    at::Tensor term = lms_coefficient(order, i, k) * derivatives_[derivatives_.size() - 1 - k];
    acc = acc.defined() ? acc + term : term;
  }
  *step_index_ += 1;
  return {sample + acc, x0};
}

at::Tensor LMSDiscreteScheduler::add_noise(const at::Tensor& original_samples, const at::Tensor& noise,
                                           const at::Tensor& timesteps) {
  return add_noise_sigmas(*this, sigmas_, timesteps_, begin_index_, step_index_, original_samples, noise, timesteps);
}

}  // namespace tessera
