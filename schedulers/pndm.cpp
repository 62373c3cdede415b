#include "schedulers/pndm.h"

#include <algorithm>

#include "schedulers/ddim.h"

namespace tessera {

PNDMScheduler::PNDMScheduler(SchedulerConfig cfg) {
  schedule_ = read_beta_schedule(cfg, /*with_zero_snr=*/false);
  num_train_timesteps_ = schedule_.betas.size(0);
  skip_prk_steps_ = cfg.get_bool("skip_prk_steps", false);
  const bool set_alpha_to_one = cfg.get_bool("set_alpha_to_one", false);
  prediction_type_ = cfg.get_choice("prediction_type", "epsilon", {"epsilon", "v_prediction"});
  timestep_spacing_ = cfg.get_choice("timestep_spacing", "leading", {"linspace", "leading", "trailing"});
  steps_offset_ = cfg.get_int("steps_offset", 0);
  cfg.finish();
  final_alpha_cumprod_ = set_alpha_to_one ? at::scalar_tensor(1.0, at::kFloat) : schedule_.alphas_cumprod[0];
}

void PNDMScheduler::set_timesteps(int64_t n, const SetTimestepsOptions& options) {
  if (options.sigmas) throw ValidationError(type() + ".set_timesteps takes no custom sigmas");
  if (options.mu) throw ValidationError("PNDMScheduler.set_timesteps takes no 'mu'");
  check_num_inference_steps(n);
  if (!skip_prk_steps_ && n < 4)
    throw ValidationError("PNDMScheduler needs at least 4 steps for its Runge-Kutta warm-up (or skip_prk_steps)");
  num_inference_steps_ = n;
  // Ascending here, unlike the other schedulers.
  std::vector<double> raw = spaced_timesteps(timestep_spacing_, n, num_train_timesteps_, steps_offset_);
  std::vector<int64_t> asc;
  for (double v : raw) asc.push_back(static_cast<int64_t>(std::nearbyint(v)));
  std::reverse(asc.begin(), asc.end());
  const int64_t m = static_cast<int64_t>(asc.size());
  std::vector<int64_t> all;
  prk_timesteps_.clear();
  if (skip_prk_steps_) {
    // The second-to-last timestep repeats: PLMS's first step is a two-evaluation (Heun-like) step.
    std::vector<int64_t> plms(asc.begin(), asc.end() - 1);
    plms.push_back(asc[m - 2]);
    plms.push_back(asc[m - 1]);
    std::reverse(plms.begin(), plms.end());
    all = plms;
  } else {
    const int64_t half = num_train_timesteps_ / n / 2;
    std::vector<int64_t> prk;
    for (int64_t i = m - 4; i < m; ++i) {
      prk.push_back(asc[i]);
      prk.push_back(asc[i] + half);
    }
    prk.pop_back();  // prk[:-1]
    std::vector<int64_t> rep;
    for (int64_t v : prk) {
      rep.push_back(v);
      rep.push_back(v);
    }
    prk_timesteps_.assign(rep.begin() + 1, rep.end() - 1);
    std::reverse(prk_timesteps_.begin(), prk_timesteps_.end());
    all = prk_timesteps_;
    for (int64_t i = m - 4; i >= 0; --i) all.push_back(asc[i]);
  }
  timesteps_ = at::tensor(all, at::kLong);
  ets_.clear();
  counter_ = 0;
  cur_model_output_ = at::Tensor();
  cur_sample_ = at::Tensor();
}

SchedulerOutput PNDMScheduler::step(const at::Tensor& model_output, double timestep, const at::Tensor& sample,
                                    std::optional<at::Generator>, std::optional<at::Tensor>) {
  require_timesteps_set("step");
  const int64_t t = static_cast<int64_t>(timestep);
  if (counter_ < static_cast<int64_t>(prk_timesteps_.size()) && !skip_prk_steps_)
    return {step_prk(model_output, t, sample), at::Tensor()};
  return {step_plms(model_output, t, sample), at::Tensor()};
}

at::Tensor PNDMScheduler::step_prk(const at::Tensor& model_output_in, int64_t timestep, const at::Tensor& sample) {
  const int64_t diff_to_prev = counter_ % 2 ? 0 : num_train_timesteps_ / num_inference_steps_ / 2;
  const int64_t prev_t = timestep - diff_to_prev;
  timestep = prk_timesteps_[counter_ / 4 * 4];
  at::Tensor model_output = model_output_in;
  auto accumulate = [&](double w) {
    cur_model_output_ = cur_model_output_.defined() ? cur_model_output_ + w * model_output_in : w * model_output_in;
  };
  // Runge-Kutta 4: weights 1/6, 1/3, 1/3, 1/6 over the four evaluations.
  if (counter_ % 4 == 0) {
    accumulate(1.0 / 6);
    ets_.push_back(model_output_in);
    cur_sample_ = sample;
  } else if ((counter_ - 1) % 4 == 0 || (counter_ - 2) % 4 == 0) {
    accumulate(1.0 / 3);
  } else {
    model_output = (cur_model_output_.defined() ? cur_model_output_ : at::zeros_like(model_output_in)) +
                   1.0 / 6 * model_output_in;
    cur_model_output_ = at::Tensor();
  }
  at::Tensor cur = cur_sample_.defined() ? cur_sample_ : sample;
  at::Tensor out = prev_sample(cur, timestep, prev_t, model_output);
  ++counter_;
  return out;
}

at::Tensor PNDMScheduler::step_plms(const at::Tensor& model_output_in, int64_t timestep, const at::Tensor& sample_in) {
  int64_t prev_t = timestep - num_train_timesteps_ / num_inference_steps_;
  at::Tensor model_output = model_output_in, sample = sample_in;
  if (counter_ != 1) {
    if (ets_.size() > 3) ets_.erase(ets_.begin(), ets_.end() - 3);
    ets_.push_back(model_output_in);
  } else {
    prev_t = timestep;
    timestep = timestep + num_train_timesteps_ / num_inference_steps_;
  }
  const size_t k = ets_.size();
  if (k == 1 && counter_ == 0) {
    cur_sample_ = sample_in;
  } else if (k == 1 && counter_ == 1) {
    model_output = (model_output_in + ets_[k - 1]) / 2;
    sample = cur_sample_;
    cur_sample_ = at::Tensor();
  } else if (k == 2) {
    model_output = (3 * ets_[k - 1] - ets_[k - 2]) / 2;
  } else if (k == 3) {
    model_output = (23 * ets_[k - 1] - 16 * ets_[k - 2] + 5 * ets_[k - 3]) / 12;
  } else {
    model_output = 1.0 / 24 * (55 * ets_[k - 1] - 59 * ets_[k - 2] + 37 * ets_[k - 3] - 9 * ets_[k - 4]);
  }
  at::Tensor out = prev_sample(sample, timestep, prev_t, model_output);
  ++counter_;
  return out;
}

at::Tensor PNDMScheduler::prev_sample(const at::Tensor& sample, int64_t t, int64_t prev_t,
                                      at::Tensor model_output) const {
  // Formula (9) of the PNDM paper.
  at::Tensor alpha_prod_t = schedule_.alphas_cumprod[t];
  at::Tensor alpha_prod_t_prev = prev_t >= 0 ? schedule_.alphas_cumprod[prev_t] : final_alpha_cumprod_;
  at::Tensor beta_prod_t = 1 - alpha_prod_t;
  at::Tensor beta_prod_t_prev = 1 - alpha_prod_t_prev;
  if (prediction_type_ == "v_prediction")
    model_output = alpha_prod_t.pow(0.5) * model_output + beta_prod_t.pow(0.5) * sample;
  at::Tensor sample_coeff = (alpha_prod_t_prev / alpha_prod_t).pow(0.5);
  at::Tensor denom = alpha_prod_t * beta_prod_t_prev.pow(0.5) + (alpha_prod_t * beta_prod_t * alpha_prod_t_prev).pow(0.5);
  return sample_coeff * sample - (alpha_prod_t_prev - alpha_prod_t) * model_output / denom;
}

at::Tensor PNDMScheduler::add_noise(const at::Tensor& original_samples, const at::Tensor& noise,
                                    const at::Tensor& timesteps) {
  return add_noise_cumprod(schedule_.alphas_cumprod, original_samples, noise, timesteps);
}

}  // namespace tessera
