#include "schedulers/unipc_multistep.h"

#include <algorithm>
#include <cmath>

#include "schedulers/ddim.h"
#include "schedulers/dpmsolver_multistep.h"

namespace tessera {

namespace {
at::Tensor lambda_of(const at::Tensor& sigma) {
  auto [alpha, s] = sigma_to_alpha_sigma_t(sigma);
  return at::log(alpha) - at::log(s);
}
}  // namespace

UniPCMultistepScheduler::UniPCMultistepScheduler(SchedulerConfig cfg) {
  schedule_ = read_beta_schedule(cfg);
  const bool zero_snr = cfg.get_bool("rescale_betas_zero_snr", false);
  num_train_timesteps_ = schedule_.betas.size(0);
  solver_order_ = cfg.get_int("solver_order", 2);
  if (solver_order_ < 1) cfg.fail("solver_order", "must be at least 1");
  prediction_type_ = cfg.get_choice("prediction_type", "epsilon", {"epsilon", "sample", "v_prediction"});
  thresholding_ = cfg.get_bool("thresholding", false);
  dynamic_thresholding_ratio_ = cfg.get_float("dynamic_thresholding_ratio", 0.995);
  sample_max_value_ = cfg.get_float("sample_max_value", 1.0);
  predict_x0_ = cfg.get_bool("predict_x0", true);
  solver_type_ = cfg.get_choice("solver_type", "bh2", {"bh1", "bh2", "midpoint", "heun", "logrho"});
  if (solver_type_ != "bh1") solver_type_ = "bh2";  // diffusers maps the DPM-Solver names to bh2
  lower_order_final_ = cfg.get_bool("lower_order_final", true);
  const nlohmann::json dc = cfg.json().value("disable_corrector", nlohmann::json::array());
  cfg.accept("disable_corrector");
  if (!dc.is_array()) cfg.fail("disable_corrector", "expected a list of step indices");
  for (const auto& v : dc) {
    if (!v.is_number_integer()) cfg.fail("disable_corrector", "expected a list of step indices");
    disable_corrector_.push_back(v.get<int64_t>());
  }
  if (cfg.json().contains("solver_p") && !cfg.json()["solver_p"].is_null()) cfg.fail("solver_p", "is not supported");
  cfg.accept("solver_p");
  use_karras_sigmas_ = cfg.get_bool("use_karras_sigmas", false);
  for (const char* unsupported : {"use_exponential_sigmas", "use_beta_sigmas", "use_flow_sigmas", "use_dynamic_shifting"})
    if (cfg.get_bool(unsupported, false)) cfg.fail(unsupported, "is not supported yet");
  for (const char* ignored : {"flow_shift", "time_shift_type", "sigma_min", "sigma_max", "shift_terminal"})
    cfg.accept(ignored);
  timestep_spacing_ = cfg.get_choice("timestep_spacing", "linspace", {"linspace", "leading", "trailing"});
  steps_offset_ = cfg.get_int("steps_offset", 0);
  final_sigmas_type_ = cfg.get_choice("final_sigmas_type", "zero", {"zero", "sigma_min"});
  cfg.finish();
  if (zero_snr) schedule_.alphas_cumprod[-1] = std::pow(2.0, -24);
  sigmas_ = ((1 - schedule_.alphas_cumprod) / schedule_.alphas_cumprod).pow(0.5);
  std::vector<double> t = linspace(0, static_cast<double>(num_train_timesteps_ - 1), num_train_timesteps_);
  std::reverse(t.begin(), t.end());
  timesteps_ = to_float_tensor(t);
}

void UniPCMultistepScheduler::set_timesteps(int64_t n, const SetTimestepsOptions& options) {
  if (options.sigmas) throw ValidationError(type() + ".set_timesteps takes no custom sigmas");
  if (options.mu) throw ValidationError("UniPCMultistepScheduler: 'mu' needs use_dynamic_shifting, not supported yet");
  check_num_inference_steps(n);
  std::vector<double> t;
  if (timestep_spacing_ == "linspace") {
    t = linspace(0, static_cast<double>(num_train_timesteps_ - 1), n + 1);
    for (double& v : t) v = std::nearbyint(v);
    std::reverse(t.begin(), t.end());
    t.pop_back();
  } else if (timestep_spacing_ == "leading") {
    const int64_t ratio = num_train_timesteps_ / (n + 1);
    for (int64_t i = n; i >= 1; --i) t.push_back(static_cast<double>(i * ratio + steps_offset_));
  } else {
    t = spaced_timesteps("trailing", n, num_train_timesteps_, steps_offset_);
  }
  std::vector<double> base = train_sigmas(schedule_.alphas_cumprod), sigmas;
  if (use_karras_sigmas_) {
    std::vector<double> log_sigmas;
    for (double s : base) log_sigmas.push_back(std::log(s));
    sigmas = karras_sigmas(base.front(), base.back(), n);
    t.clear();
    for (double s : sigmas) t.push_back(std::nearbyint(sigma_to_t(s, log_sigmas)));
    sigmas.push_back(final_sigmas_type_ == "zero" ? 0.0 : sigmas.back());
  } else {
    for (double v : t) sigmas.push_back(interp_index(v, base));
    sigmas.push_back(final_sigmas_type_ == "zero" ? 0.0 : base.front());
  }
  sigmas_ = to_float_tensor(sigmas);
  at::Tensor ts = at::empty({static_cast<int64_t>(t.size())}, at::kLong);
  for (size_t i = 0; i < t.size(); ++i) ts[i] = static_cast<int64_t>(t[i]);
  timesteps_ = ts;
  num_inference_steps_ = static_cast<int64_t>(t.size());
  model_outputs_.assign(static_cast<size_t>(solver_order_), at::Tensor());
  lower_order_nums_ = 0;
  last_sample_ = at::Tensor();
  step_index_.reset();
  begin_index_.reset();
}

at::Tensor UniPCMultistepScheduler::convert_model_output(const at::Tensor& model_output,
                                                         const at::Tensor& sample) const {
  auto [alpha_t, sigma_t] = sigma_to_alpha_sigma_t(sigmas_[*step_index_]);
  return convert_multistep_model_output(model_output, sample, alpha_t, sigma_t, prediction_type_, predict_x0_,
                                        thresholding_, dynamic_thresholding_ratio_, sample_max_value_);
}

at::Tensor UniPCMultistepScheduler::bh_update(const at::Tensor& x, int64_t order, bool is_corrector,
                                              const at::Tensor& model_t) const {
  // The predictor goes from step i to i+1; the corrector redoes the step from i-1 to i with the new output.
  const int64_t i = *step_index_;
  const int64_t to = is_corrector ? i : i + 1, from = is_corrector ? i - 1 : i;
  auto [alpha_t, sigma_t] = sigma_to_alpha_sigma_t(sigmas_[to]);
  auto [alpha_s0, sigma_s0] = sigma_to_alpha_sigma_t(sigmas_[from]);
  at::Tensor lambda_s0 = lambda_of(sigmas_[from]);
  at::Tensor h = lambda_of(sigmas_[to]) - lambda_s0;
  const size_t k = model_outputs_.size();
  const at::Tensor& m0 = model_outputs_[k - 1];
  std::vector<at::Tensor> rks, D1s;
  for (int64_t j = 1; j < order; ++j) {
    const int64_t si = from - j;
    const at::Tensor& mi = model_outputs_[k - 1 - j];
    at::Tensor rk = (lambda_of(sigmas_[si]) - lambda_s0) / h;
    rks.push_back(rk);
    D1s.push_back((mi - m0) / rk);
  }
  rks.push_back(at::ones({}, at::kFloat));
  at::Tensor rk_t = at::stack(rks);
  at::Tensor hh = predict_x0_ ? -h : h;
  at::Tensor h_phi_1 = at::expm1(hh);
  at::Tensor h_phi_k = h_phi_1 / hh - 1;
  double factorial = 1;
  at::Tensor B_h = solver_type_ == "bh1" ? hh : at::expm1(hh);
  std::vector<at::Tensor> R, b;
  for (int64_t j = 1; j <= order; ++j) {
    R.push_back(at::pow(rk_t, static_cast<double>(j - 1)));
    b.push_back(h_phi_k * factorial / B_h);
    factorial *= static_cast<double>(j + 1);
    h_phi_k = h_phi_k / hh - 1 / factorial;
  }
  at::Tensor Rm = at::stack(R), bv = at::stack(b);
  auto weighted = [&](const at::Tensor& rhos) {  // einsum('k,bkc...->bc...', rhos, D1s)
    at::Tensor acc = rhos[0] * D1s[0];
    for (size_t j = 1; j < D1s.size(); ++j) acc = acc + rhos[j] * D1s[j];
    return acc;
  };
  at::Tensor x_t_ = predict_x0_ ? sigma_t / sigma_s0 * x - alpha_t * h_phi_1 * m0
                                : alpha_t / alpha_s0 * x - sigma_t * h_phi_1 * m0;
  at::Tensor coef = predict_x0_ ? alpha_t * B_h : sigma_t * B_h;
  if (!is_corrector) {
    if (D1s.empty()) return x_t_.to(x.scalar_type());
    at::Tensor rhos_p = order == 2 ? at::full({1}, 0.5, x.options())
                                   : at::linalg_solve(Rm.slice(0, 0, -1).slice(1, 0, -1), bv.slice(0, 0, -1)).to(x.scalar_type());
    return (x_t_ - coef * weighted(rhos_p)).to(x.scalar_type());
  }
  at::Tensor rhos_c = order == 1 ? at::full({1}, 0.5, x.options()) : at::linalg_solve(Rm, bv).to(x.scalar_type());
  at::Tensor corr = D1s.empty() ? at::zeros_like(x) : weighted(rhos_c.slice(0, 0, -1));
  return (x_t_ - coef * (corr + rhos_c[-1] * (model_t - m0))).to(x.scalar_type());
}

int64_t UniPCMultistepScheduler::find_index(double timestep) const {
  at::Tensor hits = (timesteps_ == timestep).nonzero();
  if (hits.size(0) == 0) return timesteps_.size(0) - 1;
  return hits[hits.size(0) > 1 ? 1 : 0].item<int64_t>();
}

SchedulerOutput UniPCMultistepScheduler::step(const at::Tensor& model_output, double timestep,
                                              const at::Tensor& sample_in, std::optional<at::Generator>,
                                              std::optional<at::Tensor>) {
  require_timesteps_set("step");
  if (!step_index_) step_index_ = begin_index_ ? *begin_index_ : find_index(timestep);
  const int64_t i = *step_index_, n = timesteps_.size(0);
  if (i >= n) throw ExecutionError("UniPCMultistepScheduler.step called more times than there are timesteps");
  const bool use_corrector = i > 0 && last_sample_.defined() &&
                             std::find(disable_corrector_.begin(), disable_corrector_.end(), i - 1) == disable_corrector_.end();
  at::Tensor converted = convert_model_output(model_output, sample_in);
  at::Tensor sample = sample_in;
  if (use_corrector) sample = bh_update(last_sample_, this_order_, /*is_corrector=*/true, converted);
  for (int64_t k = 0; k + 1 < solver_order_; ++k) model_outputs_[k] = model_outputs_[k + 1];
  model_outputs_.back() = converted;
  const int64_t order = lower_order_final_ ? std::min(solver_order_, n - i) : solver_order_;
  this_order_ = std::min(order, lower_order_nums_ + 1);
  last_sample_ = sample;
  at::Tensor prev = bh_update(sample, this_order_, /*is_corrector=*/false, at::Tensor());
  if (lower_order_nums_ < solver_order_) ++lower_order_nums_;
  *step_index_ += 1;
  return {prev, at::Tensor()};
}

at::Tensor UniPCMultistepScheduler::add_noise(const at::Tensor& original_samples, const at::Tensor& noise,
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
