#include "schedulers/ddim.h"

#include <cmath>

namespace tessera {

std::pair<at::Tensor, at::Tensor> ddim_predict(const std::string& prediction_type, const at::Tensor& model_output,
                                               const at::Tensor& sample, const at::Tensor& alpha_prod_t) {
  at::Tensor beta_prod_t = 1 - alpha_prod_t;
  if (prediction_type == "epsilon")
    return {(sample - beta_prod_t.pow(0.5) * model_output) / alpha_prod_t.pow(0.5), model_output};
  if (prediction_type == "sample")
    return {model_output, (sample - alpha_prod_t.pow(0.5) * model_output) / beta_prod_t.pow(0.5)};
  // v_prediction
  return {alpha_prod_t.pow(0.5) * sample - beta_prod_t.pow(0.5) * model_output,
          alpha_prod_t.pow(0.5) * model_output + beta_prod_t.pow(0.5) * sample};
}

at::Tensor threshold_sample(const at::Tensor& sample, double ratio, double max_value) {
  auto dtype = sample.scalar_type();
  at::Tensor s = sample;
  if (dtype != at::kFloat && dtype != at::kDouble) s = s.to(at::kFloat);
  const int64_t batch = s.size(0);
  at::Tensor flat = s.reshape({batch, -1});  // [B, C*H*W]
  at::Tensor q = at::quantile(flat.abs(), ratio, 1);
  q = at::clamp(q, 1.0, max_value).unsqueeze(1);
  flat = at::max(at::min(flat, q), -q) / q;
  return flat.reshape(sample.sizes()).to(dtype);
}

at::Tensor add_noise_cumprod(const at::Tensor& alphas_cumprod, const at::Tensor& original_samples,
                             const at::Tensor& noise, const at::Tensor& timesteps) {
  at::Tensor ac = alphas_cumprod.to(original_samples.device(), original_samples.scalar_type());
  at::Tensor t = timesteps.to(original_samples.device(), at::kLong);
  at::Tensor sqrt_alpha = expand_like(ac.index_select(0, t.flatten()).pow(0.5), original_samples);
  at::Tensor sqrt_one_minus = expand_like((1 - ac.index_select(0, t.flatten())).pow(0.5), original_samples);
  return sqrt_alpha * original_samples + sqrt_one_minus * noise;
}

DDIMScheduler::DDIMScheduler(SchedulerConfig cfg) {
  schedule_ = read_beta_schedule(cfg);
  num_train_timesteps_ = schedule_.betas.size(0);
  clip_sample_ = cfg.get_bool("clip_sample", true);
  const bool set_alpha_to_one = cfg.get_bool("set_alpha_to_one", true);
  steps_offset_ = cfg.get_int("steps_offset", 0);
  prediction_type_ = cfg.get_choice("prediction_type", "epsilon", {"epsilon", "sample", "v_prediction"});
  thresholding_ = cfg.get_bool("thresholding", false);
  dynamic_thresholding_ratio_ = cfg.get_float("dynamic_thresholding_ratio", 0.995);
  clip_sample_range_ = cfg.get_float("clip_sample_range", 1.0);
  sample_max_value_ = cfg.get_float("sample_max_value", 1.0);
  timestep_spacing_ = cfg.get_choice("timestep_spacing", "leading", {"leading", "trailing", "linspace"});
  cfg.finish();
  final_alpha_cumprod_ = set_alpha_to_one ? at::scalar_tensor(1.0, at::kFloat) : schedule_.alphas_cumprod[0];
  timesteps_ = at::arange(num_train_timesteps_ - 1, -1, -1, at::kLong);
}

void DDIMScheduler::set_timesteps(int64_t n, const SetTimestepsOptions& options) {
  if (options.sigmas) throw ValidationError(type() + ".set_timesteps takes no custom sigmas");
  if (options.mu) throw ValidationError("DDIMScheduler.set_timesteps takes no 'mu'");
  check_num_inference_steps(n);
  num_inference_steps_ = n;
  std::vector<double> t = spaced_timesteps(timestep_spacing_, n, num_train_timesteps_, steps_offset_);
  at::Tensor ts = at::empty({static_cast<int64_t>(t.size())}, at::kLong);
  for (size_t i = 0; i < t.size(); ++i) ts[i] = static_cast<int64_t>(std::nearbyint(t[i]));
  timesteps_ = ts;
}

void DDIMScheduler::set_step_option(const std::string& name, double value) {
  if (name == "eta") eta_ = value;
  else if (name == "use_clipped_model_output") use_clipped_model_output_ = value != 0.0;
  else Scheduler::set_step_option(name, value);
}

at::Tensor DDIMScheduler::alpha_prod(int64_t t) const {
  return t >= 0 ? schedule_.alphas_cumprod[t] : final_alpha_cumprod_;
}

SchedulerOutput DDIMScheduler::step(const at::Tensor& model_output, double timestep, const at::Tensor& sample,
                                    std::optional<at::Generator> generator, std::optional<at::Tensor> noise) {
  require_timesteps_set("step");
  const int64_t t = static_cast<int64_t>(timestep);
  if (t < 0 || t >= num_train_timesteps_)
    throw ValidationError("DDIMScheduler.step: timestep " + std::to_string(t) + " is outside [0, " +
                          std::to_string(num_train_timesteps_) + ")");
  const int64_t prev_t = t - num_train_timesteps_ / num_inference_steps_;
  at::Tensor alpha_prod_t = alpha_prod(t);
  at::Tensor alpha_prod_t_prev = alpha_prod(prev_t);
  at::Tensor beta_prod_t = 1 - alpha_prod_t;

  auto [pred_original_sample, pred_epsilon] = ddim_predict(prediction_type_, model_output, sample, alpha_prod_t);
  if (thresholding_)
    pred_original_sample = threshold_sample(pred_original_sample, dynamic_thresholding_ratio_, sample_max_value_);
  else if (clip_sample_)
    pred_original_sample = pred_original_sample.clamp(-clip_sample_range_, clip_sample_range_);

  // σ_t of formula (16) of the DDIM paper.
  at::Tensor beta_prod_t_prev = 1 - alpha_prod_t_prev;
  at::Tensor variance = beta_prod_t_prev / beta_prod_t * (1 - alpha_prod_t / alpha_prod_t_prev);
  at::Tensor std_dev_t = eta_ * variance.pow(0.5);
  if (use_clipped_model_output_)
    pred_epsilon = (sample - alpha_prod_t.pow(0.5) * pred_original_sample) / beta_prod_t.pow(0.5);
  at::Tensor direction = (1 - alpha_prod_t_prev - std_dev_t.pow(2)).pow(0.5) * pred_epsilon;
  at::Tensor prev_sample = alpha_prod_t_prev.pow(0.5) * pred_original_sample + direction;
  if (eta_ > 0) {
    at::Tensor z = step_noise(model_output, generator, noise, "DDIMScheduler.step");
    prev_sample = prev_sample + std_dev_t * z;
  }
  return {prev_sample, pred_original_sample};
}

at::Tensor DDIMScheduler::add_noise(const at::Tensor& original_samples, const at::Tensor& noise,
                                    const at::Tensor& timesteps) {
  return add_noise_cumprod(schedule_.alphas_cumprod, original_samples, noise, timesteps);
}

}  // namespace tessera
