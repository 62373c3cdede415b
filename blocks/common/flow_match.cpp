#include "blocks/common/flow_match.h"

#include "tessera/error.h"
#include "models/vae/autoencoder_kl.h"
#include "schedulers/flow_match_euler_discrete.h"

namespace tessera::flow {

double calculate_shift(int64_t image_seq_len, int64_t base_seq_len, int64_t max_seq_len, double base_shift,
                       double max_shift) {
  const double m = (max_shift - base_shift) / static_cast<double>(max_seq_len - base_seq_len);
  const double b = base_shift - m * static_cast<double>(base_seq_len);
  return static_cast<double>(image_seq_len) * m + b;
}

FlowMatchEulerDiscreteScheduler& flow_scheduler(Scheduler& scheduler, const std::string& block_path) {
  auto* flow = dynamic_cast<FlowMatchEulerDiscreteScheduler*>(&scheduler);
  if (!flow)
    throw InputError("this pipeline samples a flow-matching model and needs FlowMatchEulerDiscreteScheduler; the "
                     "scheduler is " + scheduler.type(),
                     {}, block_path, "--set scheduler=FlowMatchEulerDiscreteScheduler (or auto: the model folder's)");
  return *flow;
}

std::vector<int64_t> FlowSetup::to_list() const {
  return {num_inference_steps, begin_index, image_seq_len, flux_sigmas ? 1 : 0};
}

void set_timesteps(Scheduler& scheduler, const FlowSetup& setup, const std::string& block_path) {
  FlowMatchEulerDiscreteScheduler& flow = flow_scheduler(scheduler, block_path);
  const int64_t n = setup.num_inference_steps;
  if (n <= 0) throw InputError("num_inference_steps must be positive, got " + std::to_string(n), {}, block_path);
  SetTimestepsOptions options;
  if (setup.flux_sigmas) {
    // FluxPipeline: sigmas = np.linspace(1.0, 1 / n, n)
    std::vector<double> sigmas(static_cast<size_t>(n));
    for (int64_t k = 0; k < n; ++k)
      sigmas[static_cast<size_t>(k)] = n == 1 ? 1.0 : 1.0 + (1.0 / n - 1.0) * static_cast<double>(k) / (n - 1);
    options.sigmas = std::move(sigmas);
  }
  if (flow.use_dynamic_shifting())
    options.mu = calculate_shift(setup.image_seq_len, flow.base_image_seq_len(), flow.max_image_seq_len(),
                                 flow.base_shift(), flow.max_shift());
  try {
    flow.set_timesteps(n, options);
  } catch (const ValidationError& e) {
    throw InputError(e.message(), {}, block_path, e.hint());
  }
  if (setup.begin_index > 0) flow.set_begin_index(setup.begin_index);
}

void ensure_scheduler(Scheduler& scheduler, const BlockState& s) {
  if (!s.has(scheduler_setup.name)) return;
  const auto& v = s.get(scheduler_setup.name).int_list(scheduler_setup.name);
  if (v.size() != 4)
    throw InputError("scheduler_setup must be [num_inference_steps, begin_index, image_seq_len, flux_sigmas], got " +
                         std::to_string(v.size()) + " values",
                     {}, s.block_path());
  if (scheduler.timesteps().defined() && scheduler.num_inference_steps() == v[0]) return;
  set_timesteps(scheduler, FlowSetup{v[0], v[1], v[2], v[3] != 0}, s.block_path());
}

namespace {
void check_flow_vae(const AutoencoderKLImpl& vae) {
  if (vae.config.latents_mean || vae.config.latents_std)
    throw ModelLoadError("this VAE config sets latents_mean/latents_std, which the FLUX/SD3 blocks do not apply");
}
}  // namespace

at::Tensor to_vae_latents(const at::Tensor& z, const AutoencoderKLImpl& vae) {
  check_flow_vae(vae);
  return (z - vae.config.shift_factor.value_or(0.0)) * vae.config.scaling_factor;
}

at::Tensor from_vae_latents(const at::Tensor& latents, const AutoencoderKLImpl& vae) {
  check_flow_vae(vae);
  return latents / vae.config.scaling_factor + vae.config.shift_factor.value_or(0.0);
}

at::Tensor encode_image(AutoencoderKLImpl& vae, const at::Tensor& image, at::Generator& gen) {
  DiagonalGaussianDistribution dist = vae.encode(image);
  return to_vae_latents(dist.sample(gen), vae);
}

}  // namespace tessera::flow
