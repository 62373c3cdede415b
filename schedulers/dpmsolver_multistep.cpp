#include "schedulers/dpmsolver_multistep.h"

#include <cmath>

#include "schedulers/ddim.h"

namespace tessera {

std::pair<at::Tensor, at::Tensor> sigma_to_alpha_sigma_t(const at::Tensor& sigma) {
  at::Tensor alpha_t = 1 / (sigma.pow(2) + 1).pow(0.5);
  return {alpha_t, sigma * alpha_t};
}

namespace {
at::Tensor lambda_of(const std::pair<at::Tensor, at::Tensor>& as) { return at::log(as.first) - at::log(as.second); }
}  // namespace

DPMSolverMultistepScheduler::DPMSolverMultistepScheduler(SchedulerConfig cfg) {
  schedule_ = read_beta_schedule(cfg);
  const bool zero_snr = cfg.get_bool("rescale_betas_zero_snr", false);
  beta_schedule_ = cfg.get_string("beta_schedule", "linear");
  num_train_timesteps_ = schedule_.betas.size(0);
  solver_order_ = cfg.get_int("solver_order", 2);
  if (solver_order_ < 1 || solver_order_ > 3) cfg.fail("solver_order", "must be 1, 2 or 3");
  prediction_type_ = cfg.get_choice("prediction_type", "epsilon", {"epsilon", "sample", "v_prediction"});
  thresholding_ = cfg.get_bool("thresholding", false);
  dynamic_thresholding_ratio_ = cfg.get_float("dynamic_thresholding_ratio", 0.995);
  sample_max_value_ = cfg.get_float("sample_max_value", 1.0);
  algorithm_type_ = cfg.get_choice("algorithm_type", "dpmsolver++",
                                   {"dpmsolver", "dpmsolver++", "sde-dpmsolver", "sde-dpmsolver++", "deis"});
  if (algorithm_type_ == "deis") algorithm_type_ = "dpmsolver++";  // diffusers maps it so too
  solver_type_ = cfg.get_choice("solver_type", "midpoint", {"midpoint", "heun", "logrho", "bh1", "bh2"});
  if (solver_type_ != "heun") solver_type_ = "midpoint";
  lower_order_final_ = cfg.get_bool("lower_order_final", true);
  euler_at_final_ = cfg.get_bool("euler_at_final", false);
  use_karras_sigmas_ = cfg.get_bool("use_karras_sigmas", false);
  for (const char* unsupported : {"use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas", "use_flow_sigmas",
                                  "use_dynamic_shifting"})
    if (cfg.get_bool(unsupported, false)) cfg.fail(unsupported, "is not supported yet");
  cfg.accept("flow_shift");
  cfg.accept("time_shift_type");
  final_sigmas_type_ = cfg.get_choice("final_sigmas_type", "zero", {"zero", "sigma_min"});
  lambda_min_clipped_ = cfg.get_float("lambda_min_clipped", -INFINITY);
  if (!cfg.get_string("variance_type", "").empty())
    cfg.fail("variance_type", "learned variances are not supported yet (use null)");
  timestep_spacing_ = cfg.get_choice("timestep_spacing", "linspace", {"linspace", "leading", "trailing"});
  steps_offset_ = cfg.get_int("steps_offset", 0);
  cfg.finish();
  if (algorithm_type_ != "dpmsolver++" && algorithm_type_ != "sde-dpmsolver++" && final_sigmas_type_ == "zero")
    throw ValidationError("DPMSolverMultistepScheduler: final_sigmas_type 'zero' needs algorithm_type dpmsolver++ or "
                          "sde-dpmsolver++ (use 'sigma_min')");
  if (zero_snr) schedule_.alphas_cumprod[-1] = std::pow(2.0, -24);
  lambda_t_ = at::log(at::sqrt(schedule_.alphas_cumprod)) - at::log(at::sqrt(1 - schedule_.alphas_cumprod));
  sigmas_ = ((1 - schedule_.alphas_cumprod) / schedule_.alphas_cumprod).pow(0.5);
  std::vector<double> t = linspace(0, static_cast<double>(num_train_timesteps_ - 1), num_train_timesteps_);
  std::reverse(t.begin(), t.end());
  timesteps_ = to_float_tensor(t);
}

void DPMSolverMultistepScheduler::set_timesteps(int64_t n, const SetTimestepsOptions& options) {
  if (options.sigmas) throw ValidationError(type() + ".set_timesteps takes no custom sigmas");
  if (options.mu) throw ValidationError("DPMSolverMultistepScheduler: 'mu' needs use_dynamic_shifting, not supported yet");
  check_num_inference_steps(n);
  // Timesteps whose log-SNR is below lambda_min_clipped are cut off (for cosine schedules).
  const int64_t clipped = (lambda_t_ < lambda_min_clipped_).sum().item<int64_t>();
  const int64_t last = num_train_timesteps_ - clipped;
  std::vector<double> t;
  if (timestep_spacing_ == "linspace") {
    t = linspace(0, static_cast<double>(last - 1), n + 1);
    for (double& v : t) v = std::nearbyint(v);
    std::reverse(t.begin(), t.end());
    t.pop_back();
  } else if (timestep_spacing_ == "leading") {
    const int64_t ratio = last / (n + 1);
    for (int64_t i = n; i >= 1; --i) t.push_back(static_cast<double>(i * ratio + steps_offset_));
  } else {
    const double ratio = static_cast<double>(num_train_timesteps_) / static_cast<double>(n);
    const int64_t count = static_cast<int64_t>(std::ceil(last / ratio));
    for (int64_t i = 0; i < count; ++i) t.push_back(std::nearbyint(last - i * ratio) - 1);
  }
  std::vector<double> base = train_sigmas(schedule_.alphas_cumprod), log_sigmas, sigmas;
  for (double s : base) log_sigmas.push_back(std::log(s));
  if (use_karras_sigmas_) {
    sigmas = karras_sigmas(base.front(), base.back(), n);
    t.clear();
    for (double s : sigmas) {
      double v = sigma_to_t(s, log_sigmas);
      t.push_back(beta_schedule_ != "squaredcos_cap_v2" ? std::nearbyint(v) : v);
    }
  } else {
    for (double v : t) sigmas.push_back(interp_index(v, base));
  }
  sigmas.push_back(final_sigmas_type_ == "zero" ? 0.0 : base.front());
  sigmas_ = to_float_tensor(sigmas);
  at::Tensor ts = at::empty({static_cast<int64_t>(t.size())}, at::kLong);
  for (size_t i = 0; i < t.size(); ++i) ts[i] = static_cast<int64_t>(t[i]);  // astype(int64) truncates
  timesteps_ = ts;
  num_inference_steps_ = static_cast<int64_t>(t.size());
  model_outputs_.assign(static_cast<size_t>(solver_order_), at::Tensor());
  lower_order_nums_ = 0;
  step_index_.reset();
  begin_index_.reset();
}

at::Tensor DPMSolverMultistepScheduler::convert_model_output(const at::Tensor& model_output,
                                                             const at::Tensor& sample) const {
  auto [alpha_t, sigma_t] = sigma_to_alpha_sigma_t(sigmas_[*step_index_]);
  // The ++ solvers work on the data prediction x0, the plain ones on the noise prediction epsilon.
  const bool predict_x0 = algorithm_type_ == "dpmsolver++" || algorithm_type_ == "sde-dpmsolver++";
  return convert_multistep_model_output(model_output, sample, alpha_t, sigma_t, prediction_type_, predict_x0,
                                        thresholding_, dynamic_thresholding_ratio_, sample_max_value_);
}

at::Tensor convert_multistep_model_output(const at::Tensor& model_output, const at::Tensor& sample,
                                          const at::Tensor& alpha_t, const at::Tensor& sigma_t,
                                          const std::string& prediction_type, bool predict_x0, bool thresholding,
                                          double dynamic_thresholding_ratio, double sample_max_value) {
  if (predict_x0) {
    at::Tensor x0;
    if (prediction_type == "epsilon") x0 = (sample - sigma_t * model_output) / alpha_t;
    else if (prediction_type == "sample") x0 = model_output;
    else x0 = alpha_t * sample - sigma_t * model_output;
    if (thresholding) x0 = threshold_sample(x0, dynamic_thresholding_ratio, sample_max_value);
    return x0;
  }
  at::Tensor eps;
  if (prediction_type == "epsilon") eps = model_output;
  else if (prediction_type == "sample") eps = (sample - alpha_t * model_output) / sigma_t;
  else eps = alpha_t * model_output + sigma_t * sample;
  if (thresholding) {
    at::Tensor x0 = threshold_sample((sample - sigma_t * eps) / alpha_t, dynamic_thresholding_ratio, sample_max_value);
    eps = (sample - alpha_t * x0) / sigma_t;
  }
  return eps;
}

at::Tensor DPMSolverMultistepScheduler::first_order(const at::Tensor& m, const at::Tensor& sample,
                                                    const at::Tensor& noise) const {
  auto t = sigma_to_alpha_sigma_t(sigmas_[*step_index_ + 1]);
  auto s = sigma_to_alpha_sigma_t(sigmas_[*step_index_]);
  at::Tensor h = lambda_of(t) - lambda_of(s);
  const at::Tensor &alpha_t = t.first, &sigma_t = t.second, &alpha_s = s.first, &sigma_s = s.second;
  if (algorithm_type_ == "dpmsolver++") return sigma_t / sigma_s * sample - alpha_t * (at::exp(-h) - 1.0) * m;
  if (algorithm_type_ == "dpmsolver") return alpha_t / alpha_s * sample - sigma_t * (at::exp(h) - 1.0) * m;
  if (algorithm_type_ == "sde-dpmsolver++")
    return sigma_t / sigma_s * at::exp(-h) * sample + alpha_t * (1 - at::exp(-2.0 * h)) * m +
           sigma_t * at::sqrt(1.0 - at::exp(-2 * h)) * noise;
  return alpha_t / alpha_s * sample - 2.0 * (sigma_t * (at::exp(h) - 1.0)) * m +
         sigma_t * at::sqrt(at::exp(2 * h) - 1.0) * noise;
}

at::Tensor DPMSolverMultistepScheduler::second_order(const at::Tensor& sample, const at::Tensor& noise) const {
  const int64_t i = *step_index_;
  auto t = sigma_to_alpha_sigma_t(sigmas_[i + 1]);
  auto s0 = sigma_to_alpha_sigma_t(sigmas_[i]);
  auto s1 = sigma_to_alpha_sigma_t(sigmas_[i - 1]);
  const at::Tensor &alpha_t = t.first, &sigma_t = t.second, &alpha_s0 = s0.first, &sigma_s0 = s0.second;
  const at::Tensor& m0 = model_outputs_[model_outputs_.size() - 1];
  const at::Tensor& m1 = model_outputs_[model_outputs_.size() - 2];
  at::Tensor h = lambda_of(t) - lambda_of(s0), h_0 = lambda_of(s0) - lambda_of(s1);
  at::Tensor r0 = h_0 / h;
  at::Tensor D0 = m0, D1 = 1.0 / r0 * (m0 - m1);
  const bool mid = solver_type_ == "midpoint";
  if (algorithm_type_ == "dpmsolver++")
    return mid ? sigma_t / sigma_s0 * sample - alpha_t * (at::exp(-h) - 1.0) * D0 -
                     0.5 * (alpha_t * (at::exp(-h) - 1.0)) * D1
               : sigma_t / sigma_s0 * sample - alpha_t * (at::exp(-h) - 1.0) * D0 +
                     alpha_t * ((at::exp(-h) - 1.0) / h + 1.0) * D1;
  if (algorithm_type_ == "dpmsolver")
    return mid ? alpha_t / alpha_s0 * sample - sigma_t * (at::exp(h) - 1.0) * D0 -
                     0.5 * (sigma_t * (at::exp(h) - 1.0)) * D1
               : alpha_t / alpha_s0 * sample - sigma_t * (at::exp(h) - 1.0) * D0 -
                     sigma_t * ((at::exp(h) - 1.0) / h - 1.0) * D1;
  if (algorithm_type_ == "sde-dpmsolver++") {
    at::Tensor base = sigma_t / sigma_s0 * at::exp(-h) * sample + alpha_t * (1 - at::exp(-2.0 * h)) * D0;
    at::Tensor d1 = mid ? 0.5 * (alpha_t * (1 - at::exp(-2.0 * h))) * D1
                        : alpha_t * ((1.0 - at::exp(-2.0 * h)) / (-2.0 * h) + 1.0) * D1;
    return base + d1 + sigma_t * at::sqrt(1.0 - at::exp(-2 * h)) * noise;
  }
  at::Tensor base = alpha_t / alpha_s0 * sample - 2.0 * (sigma_t * (at::exp(h) - 1.0)) * D0;
  at::Tensor d1 = mid ? sigma_t * (at::exp(h) - 1.0) * D1 : 2.0 * (sigma_t * ((at::exp(h) - 1.0) / h - 1.0)) * D1;
  return base - d1 + sigma_t * at::sqrt(at::exp(2 * h) - 1.0) * noise;
}

at::Tensor DPMSolverMultistepScheduler::third_order(const at::Tensor& sample, const at::Tensor& noise) const {
  const int64_t i = *step_index_;
  auto t = sigma_to_alpha_sigma_t(sigmas_[i + 1]);
  auto s0 = sigma_to_alpha_sigma_t(sigmas_[i]);
  auto s1 = sigma_to_alpha_sigma_t(sigmas_[i - 1]);
  auto s2 = sigma_to_alpha_sigma_t(sigmas_[i - 2]);
  const at::Tensor &alpha_t = t.first, &sigma_t = t.second, &alpha_s0 = s0.first, &sigma_s0 = s0.second;
  const size_t k = model_outputs_.size();
  const at::Tensor &m0 = model_outputs_[k - 1], &m1 = model_outputs_[k - 2], &m2 = model_outputs_[k - 3];
  at::Tensor h = lambda_of(t) - lambda_of(s0), h_0 = lambda_of(s0) - lambda_of(s1), h_1 = lambda_of(s1) - lambda_of(s2);
  at::Tensor r0 = h_0 / h, r1 = h_1 / h;
  at::Tensor D0 = m0, D1_0 = 1.0 / r0 * (m0 - m1), D1_1 = 1.0 / r1 * (m1 - m2);
  at::Tensor D1 = D1_0 + r0 / (r0 + r1) * (D1_0 - D1_1);
  at::Tensor D2 = 1.0 / (r0 + r1) * (D1_0 - D1_1);
  if (algorithm_type_ == "dpmsolver++")
    return sigma_t / sigma_s0 * sample - alpha_t * (at::exp(-h) - 1.0) * D0 +
           alpha_t * ((at::exp(-h) - 1.0) / h + 1.0) * D1 - alpha_t * ((at::exp(-h) - 1.0 + h) / h.pow(2) - 0.5) * D2;
  if (algorithm_type_ == "dpmsolver")
    return alpha_t / alpha_s0 * sample - sigma_t * (at::exp(h) - 1.0) * D0 -
           sigma_t * ((at::exp(h) - 1.0) / h - 1.0) * D1 - sigma_t * ((at::exp(h) - 1.0 - h) / h.pow(2) - 0.5) * D2;
  if (algorithm_type_ == "sde-dpmsolver++")
    return sigma_t / sigma_s0 * at::exp(-h) * sample + alpha_t * (1.0 - at::exp(-2.0 * h)) * D0 +
           alpha_t * ((1.0 - at::exp(-2.0 * h)) / (-2.0 * h) + 1.0) * D1 +
           alpha_t * ((1.0 - at::exp(-2.0 * h) - 2.0 * h) / (2.0 * h).pow(2) - 0.5) * D2 +
           sigma_t * at::sqrt(1.0 - at::exp(-2 * h)) * noise;
  throw ValidationError("DPMSolverMultistepScheduler: third order is not available for sde-dpmsolver");
}

int64_t DPMSolverMultistepScheduler::find_index(double timestep) const {
  at::Tensor hits = (timesteps_ == timestep).nonzero();
  if (hits.size(0) == 0) return timesteps_.size(0) - 1;  // diffusers falls back to the last step
  return hits[hits.size(0) > 1 ? 1 : 0].item<int64_t>();
}

SchedulerOutput DPMSolverMultistepScheduler::step(const at::Tensor& model_output_in, double timestep,
                                                  const at::Tensor& sample_in, std::optional<at::Generator> generator,
                                                  std::optional<at::Tensor> noise_in) {
  require_timesteps_set("step");
  if (!step_index_) step_index_ = begin_index_ ? *begin_index_ : find_index(timestep);
  const int64_t n = timesteps_.size(0), i = *step_index_;
  if (i >= n) throw ExecutionError("DPMSolverMultistepScheduler.step called more times than there are timesteps");
  const bool lower_order_final =
      i == n - 1 && (euler_at_final_ || (lower_order_final_ && n < 15) || final_sigmas_type_ == "zero");
  const bool lower_order_second = i == n - 2 && lower_order_final_ && n < 15;
  at::Tensor model_output = convert_model_output(model_output_in, sample_in);
  for (int64_t k = 0; k + 1 < solver_order_; ++k) model_outputs_[k] = model_outputs_[k + 1];
  model_outputs_.back() = model_output;
  at::Tensor sample = sample_in.to(at::kFloat);
  at::Tensor noise;
  if (algorithm_type_ == "sde-dpmsolver" || algorithm_type_ == "sde-dpmsolver++")
    noise = step_noise(model_output.to(at::kFloat), generator, noise_in, "DPMSolverMultistepScheduler.step");
  at::Tensor prev;
  if (solver_order_ == 1 || lower_order_nums_ < 1 || lower_order_final) prev = first_order(model_output, sample, noise);
  else if (solver_order_ == 2 || lower_order_nums_ < 2 || lower_order_second) prev = second_order(sample, noise);
  else prev = third_order(sample, noise);
  if (lower_order_nums_ < solver_order_) ++lower_order_nums_;
  *step_index_ += 1;
  return {prev.to(model_output.scalar_type()), at::Tensor()};
}

at::Tensor DPMSolverMultistepScheduler::add_noise(const at::Tensor& original_samples, const at::Tensor& noise,
                                                  const at::Tensor& timesteps) {
  at::Tensor t = timesteps.flatten();
  std::vector<int64_t> idx;
  for (int64_t k = 0; k < t.size(0); ++k)
    idx.push_back(!begin_index_ ? find_index(t[k].item<double>()) : (step_index_ ? *step_index_ : *begin_index_));
  at::Tensor sigma = expand_like(sigmas_.to(original_samples.options()).index_select(0, at::tensor(idx, at::kLong)),
                                 original_samples);
  auto [alpha_t, sigma_t] = sigma_to_alpha_sigma_t(sigma);
  return alpha_t * original_samples + sigma_t * noise;
}

}  // namespace tessera
