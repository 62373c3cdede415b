#include "schedulers/schedule_utils.h"

#include <algorithm>
#include <cmath>

namespace tessera {

BetaSchedule read_beta_schedule(SchedulerConfig& cfg, bool with_zero_snr, BetaDefaults defaults) {
  const int64_t n = cfg.get_int("num_train_timesteps", 1000);
  const double beta_start = cfg.get_float("beta_start", defaults.beta_start);
  const double beta_end = cfg.get_float("beta_end", defaults.beta_end);
  const std::string schedule =
      cfg.get_choice("beta_schedule", defaults.beta_schedule, {"linear", "scaled_linear", "squaredcos_cap_v2"});
  auto trained = cfg.get_optional_float_list("trained_betas");
  const bool zero_snr = with_zero_snr && cfg.get_bool("rescale_betas_zero_snr", false);
  if (n <= 0) cfg.fail("num_train_timesteps", "must be positive, got " + std::to_string(n));

  BetaSchedule s;
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  if (trained) {
    if (static_cast<int64_t>(trained->size()) != n)
      cfg.fail("trained_betas", "has " + std::to_string(trained->size()) + " values but num_train_timesteps is " +
                                    std::to_string(n));
    s.betas = to_float_tensor(*trained);
  } else if (schedule == "linear") {
    s.betas = at::linspace(beta_start, beta_end, n, f32);
  } else if (schedule == "scaled_linear") {
    // diffusers: linspace of square roots, squared (the SD schedule).
    s.betas = at::linspace(std::sqrt(beta_start), std::sqrt(beta_end), n, f32).pow(2);
  } else {
    s.betas = betas_for_alpha_bar(n);
  }
  if (zero_snr) s.betas = rescale_zero_terminal_snr(s.betas);
  s.alphas = 1.0 - s.betas;
  s.alphas_cumprod = at::cumprod(s.alphas, 0);
  return s;
}

at::Tensor betas_for_alpha_bar(int64_t num_diffusion_timesteps, double max_beta) {
  auto alpha_bar = [](double t) {
    double c = std::cos((t + 0.008) / 1.008 * M_PI / 2);
    return c * c;
  };
  std::vector<double> betas;
  for (int64_t i = 0; i < num_diffusion_timesteps; ++i) {
    double t1 = static_cast<double>(i) / num_diffusion_timesteps;
    double t2 = static_cast<double>(i + 1) / num_diffusion_timesteps;
    betas.push_back(std::min(1 - alpha_bar(t2) / alpha_bar(t1), max_beta));
  }
  return to_float_tensor(betas);
}

at::Tensor rescale_zero_terminal_snr(const at::Tensor& betas) {
  at::Tensor alphas = 1.0 - betas;
  at::Tensor alphas_cumprod = at::cumprod(alphas, 0);
  at::Tensor sqrt_bar = alphas_cumprod.sqrt();
  at::Tensor first = sqrt_bar[0].clone();
  at::Tensor last = sqrt_bar[-1].clone();
  // Shift so the last step has zero SNR, scale so the first keeps its value.
  sqrt_bar = sqrt_bar - last;
  sqrt_bar = sqrt_bar * (first / (first - last));
  at::Tensor bar = sqrt_bar.pow(2);
  at::Tensor a = at::cat({bar.slice(0, 0, 1), bar.slice(0, 1) / bar.slice(0, 0, -1)});
  return 1 - a;
}

std::vector<double> linspace(double start, double stop, int64_t n) {
  std::vector<double> out(static_cast<size_t>(std::max<int64_t>(n, 0)));
  if (n == 1) {
    out[0] = start;
    return out;
  }
  const double step = (stop - start) / static_cast<double>(n - 1);
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<double>(i) * step + start;
  if (n > 1) out[n - 1] = stop;
  return out;
}

std::vector<double> spaced_timesteps(const std::string& spacing, int64_t n, int64_t num_train, int64_t steps_offset) {
  std::vector<double> t;
  if (spacing == "linspace") {
    t = linspace(0, static_cast<double>(num_train - 1), n);
    std::reverse(t.begin(), t.end());
  } else if (spacing == "leading") {
    const int64_t ratio = num_train / n;  // integer division, as diffusers
    for (int64_t i = n - 1; i >= 0; --i) t.push_back(static_cast<double>(i * ratio + steps_offset));
  } else if (spacing == "trailing") {
    const double ratio = static_cast<double>(num_train) / static_cast<double>(n);
    // np.arange(num_train, 0, -ratio): ceil(num_train / ratio) values start + i * step.
    const int64_t count = static_cast<int64_t>(std::ceil(num_train / ratio));
    for (int64_t i = 0; i < count; ++i)
      t.push_back(std::nearbyint(static_cast<double>(num_train) + static_cast<double>(i) * -ratio) - 1);
  } else {
    throw ValidationError("timestep_spacing '" + spacing + "' is not supported (one of 'linspace', 'leading', 'trailing')");
  }
  return t;
}

std::vector<double> karras_sigmas(double sigma_min, double sigma_max, int64_t n) {
  const double rho = 7.0;
  const double min_inv = std::pow(sigma_min, 1 / rho);
  const double max_inv = std::pow(sigma_max, 1 / rho);
  std::vector<double> out;
  for (double r : linspace(0, 1, n)) out.push_back(std::pow(max_inv + r * (min_inv - max_inv), rho));
  return out;
}

double interp_index(double x, const std::vector<double>& fp) {
  const int64_t n = static_cast<int64_t>(fp.size());
  if (x <= 0) return fp.front();
  if (x >= n - 1) return fp.back();
  const int64_t j = static_cast<int64_t>(std::floor(x));
  const double slope = fp[j + 1] - fp[j];  // xp spacing is 1
  // numpy: slope * (x - xp[j]) + fp[j]
  return slope * (x - static_cast<double>(j)) + fp[j];
}

double sigma_to_t(double sigma, const std::vector<double>& log_sigmas) {
  const double log_sigma = std::log(std::max(sigma, 1e-10));
  const int64_t n = static_cast<int64_t>(log_sigmas.size());
  // numpy: cumsum(dists >= 0).argmax() = the last index whose log_sigma is <= ours (0 when none), clipped so
  // that a high neighbour exists.
  int64_t low = 0;
  for (int64_t i = 0; i < n; ++i)
    if (log_sigma - log_sigmas[i] >= 0) low = i;
  low = std::min(low, n - 2);
  const int64_t high = low + 1;
  double w = (log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[high]);
  w = std::clamp(w, 0.0, 1.0);
  return (1 - w) * static_cast<double>(low) + w * static_cast<double>(high);
}

std::vector<double> train_sigmas(const at::Tensor& alphas_cumprod) {
  at::Tensor s = ((1 - alphas_cumprod) / alphas_cumprod).pow(0.5).contiguous();
  const float* p = s.data_ptr<float>();
  return std::vector<double>(p, p + s.numel());
}

at::Tensor to_float_tensor(const std::vector<double>& v) {
  at::Tensor t = at::empty({static_cast<int64_t>(v.size())}, at::kFloat);
  float* p = t.data_ptr<float>();
  for (size_t i = 0; i < v.size(); ++i) p[i] = static_cast<float>(v[i]);
  return t;
}

at::Tensor to_long_tensor(const std::vector<double>& v) {
  at::Tensor t = at::empty({static_cast<int64_t>(v.size())}, at::kLong);
  int64_t* p = t.data_ptr<int64_t>();
  for (size_t i = 0; i < v.size(); ++i) p[i] = static_cast<int64_t>(std::nearbyint(v[i]));
  return t;
}

at::Tensor expand_like(const at::Tensor& factor, const at::Tensor& like) {
  at::Tensor f = factor.flatten();
  while (f.dim() < like.dim()) f = f.unsqueeze(-1);
  return f;
}

at::Tensor step_noise(const at::Tensor& like, std::optional<at::Generator> generator,
                      const std::optional<at::Tensor>& noise, const std::string& who) {
  if (noise && noise->defined()) {
    if (noise->sizes() != like.sizes())
      throw ValidationError(who + ": injected noise has shape " + c10::str(noise->sizes()) + ", expected " +
                            c10::str(like.sizes()));
    return noise->to(like.options());
  }
  // diffusers' randn_tensor on the CPU: one torch.randn of the full shape from the generator.
  c10::optional<at::Generator> gen;
  if (generator) gen = *generator;
  at::Tensor r = at::randn(like.sizes(), gen, like.options().device(at::kCPU));
  return r.to(like.device());
}

}  // namespace tessera
