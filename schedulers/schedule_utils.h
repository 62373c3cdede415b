#pragma once
/// Helpers shared by the schedulers: beta schedules, zero-terminal-SNR rescaling, Karras sigmas, timestep
/// spacing and sigma/timestep interpolation, computed as diffusers computes them (float32 torch tensors where
/// diffusers uses torch, doubles where it uses numpy) so results match to the last bits that matter.
#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "schedulers/scheduler.h"

namespace tessera {

/// betas, alphas = 1 - betas and their cumulative product, all float32 [num_train_timesteps].
struct BetaSchedule {
  at::Tensor betas;
  at::Tensor alphas;
  at::Tensor alphas_cumprod;
};

/// Reads num_train_timesteps, beta_start, beta_end, beta_schedule (linear | scaled_linear | squaredcos_cap_v2),
/// trained_betas and (when `with_zero_snr`) rescale_betas_zero_snr, and builds the schedule. The defaults are the
/// class's own (most use 0.0001..0.02 linear; LCM, Heun and KDPM2 differ).
struct BetaDefaults {
  double beta_start = 0.0001, beta_end = 0.02;
  const char* beta_schedule = "linear";
};
BetaSchedule read_beta_schedule(SchedulerConfig& cfg, bool with_zero_snr = true, BetaDefaults defaults = {});

/// diffusers' betas_for_alpha_bar with the cosine transform ("squaredcos_cap_v2"), float32.
at::Tensor betas_for_alpha_bar(int64_t num_diffusion_timesteps, double max_beta = 0.999);
/// Rescales betas to zero terminal SNR (https://arxiv.org/abs/2305.08891, Algorithm 1).
at::Tensor rescale_zero_terminal_snr(const at::Tensor& betas);

/// np.linspace(start, stop, n) in double.
std::vector<double> linspace(double start, double stop, int64_t n);
/// Raw timesteps for `spacing` in descending order: linspace is not rounded (callers round or cast as their
/// diffusers class does), leading includes steps_offset, trailing is rounded and minus one.
std::vector<double> spaced_timesteps(const std::string& spacing, int64_t num_inference_steps,
                                     int64_t num_train_timesteps, int64_t steps_offset);
/// Karras et al. (2022) sigmas, rho = 7, from sigma_max down to sigma_min.
std::vector<double> karras_sigmas(double sigma_min, double sigma_max, int64_t n);
/// np.interp(x, [0, 1, …, len(fp)-1], fp).
double interp_index(double x, const std::vector<double>& fp);
/// Fractional timestep of `sigma` by log-linear interpolation in `log_sigmas` (diffusers' _sigma_to_t).
double sigma_to_t(double sigma, const std::vector<double>& log_sigmas);
/// ((1 - ᾱ) / ᾱ)^0.5 as float32 tensor values widened to double (numpy's view of the torch tensor).
std::vector<double> train_sigmas(const at::Tensor& alphas_cumprod);
/// float32 tensor from doubles (each value rounded to float, as numpy's astype(np.float32)).
at::Tensor to_float_tensor(const std::vector<double>& v);
/// int64 tensor from doubles rounded half to even (numpy's round then astype(np.int64)).
at::Tensor to_long_tensor(const std::vector<double>& v);
/// Broadcasts a per-batch [B] (or [1]) factor over `like`'s trailing dimensions.
at::Tensor expand_like(const at::Tensor& factor, const at::Tensor& like);
/// Stochastic steps: the injected noise, or a standard normal draw from `generator` with `like`'s shape and dtype.
at::Tensor step_noise(const at::Tensor& like, std::optional<at::Generator> generator,
                      const std::optional<at::Tensor>& noise, const std::string& who);

}  // namespace tessera
