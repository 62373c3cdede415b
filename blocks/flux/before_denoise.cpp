#include "blocks/flux/before_denoise.h"

#include "blocks/common/flow_match.h"
#include "blocks/flux/flux_common.h"
#include "blocks/flux/flux_params.h"
#include "blocks/sd/sd_common.h"
#include "tessera/components.h"
#include "models/transformers/transformer_flux.h"
#include "models/vae/autoencoder_kl.h"
#include "schedulers/scheduler.h"
#include "schedulers/strength.h"

namespace tessera {

namespace {

/// height × width of this run (default 128 × the VAE factor, FluxPipeline's default_sample_size) and its latent
/// size, checked against the packing.
struct Size {
  int64_t height, width, h, w;
};
Size run_size(Components& c, const BlockState& s) {
  auto vae = c.get_as<AutoencoderKLImpl>("vae");
  const int64_t f = sd::vae_scale_factor(*vae);
  const int64_t height = s.has(flux::height.name) ? s.get_int(flux::height.name) : 128 * f;
  const int64_t width = s.has(flux::width.name) ? s.get_int(flux::width.name) : 128 * f;
  auto [h, w] = flux::latent_size(height, width, f, s.block_path());
  return {height, width, h, w};
}

flow::FlowSetup flux_setup(Components& c, const BlockState& s) {
  const Size z = run_size(c, s);
  flow::FlowSetup setup;
  setup.num_inference_steps = s.get_int(sd::num_inference_steps.name);
  setup.image_seq_len = (z.h / 2) * (z.w / 2);
  setup.flux_sigmas = true;
  return setup;
}

std::string shape_str(at::IntArrayRef shape) {
  std::string out = "[";
  for (size_t k = 0; k < shape.size(); ++k) out += (k ? ", " : "") + std::to_string(shape[k]);
  return out + "]";
}

int64_t latent_channels(Components& c) {
  return c.get_as<FluxTransformer2DModelImpl>("transformer")->config.in_channels / 4;
}

}  // namespace

// ---------------------------------------------------------------- flux.set_timesteps

BlockSpec FluxSetTimestepsStep::spec() const {
  return BlockSpec(kId, kDescription)
      .component(sd::scheduler_component())
      .component(sd::vae_component())
      .input(sd::num_inference_steps)
      .input(flux::height)
      .input(flux::width)
      .output(sd::timesteps_out)
      .output(sd::num_inference_steps_out)
      .output(flow::scheduler_setup_out);
}

void FluxSetTimestepsStep::run(Components& c, BlockState& s) const {
  auto scheduler = c.get_as<Scheduler>("scheduler");
  const flow::FlowSetup setup = flux_setup(c, s);
  flow::set_timesteps(*scheduler, setup, s.block_path());
  s.set(sd::timesteps_out.name, scheduler->timesteps().clone());
  s.set(sd::num_inference_steps_out.name, Value(setup.num_inference_steps));
  s.set(flow::scheduler_setup_out.name, Value(setup.to_list()));
}

// ---------------------------------------------------------------- flux.img2img_set_timesteps

BlockSpec FluxImg2ImgSetTimestepsStep::spec() const {
  InputParam strength = sd::strength;
  strength.description = "How much to transform the input image, in (0, 1]: timesteps[int(n - n*strength):] run";
  strength.default_value = Value(0.6);  // FluxImg2ImgPipeline's default
  return BlockSpec(kId, kDescription)
      .component(sd::scheduler_component())
      .component(sd::vae_component())
      .input(sd::num_inference_steps)
      .input(flux::height)
      .input(flux::width)
      .input(strength)
      .input(sd::batch_size)
      .input(sd::num_images_per_prompt)
      .output(sd::timesteps_out)
      .output(sd::num_inference_steps_out)
      .output(sd::latent_timestep_out)
      .output(flow::scheduler_setup_out)
      .output(sd::strength_out);
}

void FluxImg2ImgSetTimestepsStep::run(Components& c, BlockState& s) const {
  auto scheduler = c.get_as<Scheduler>("scheduler");
  flow::FlowSetup setup = flux_setup(c, s);
  flow::set_timesteps(*scheduler, setup, s.block_path());
  const double strength = s.get_float(sd::strength.name);
  StrengthTimesteps kept;
  try {
    kept = flow_strength_timesteps(*scheduler, setup.num_inference_steps, strength);
  } catch (const Error& e) {
    throw InputError(e.message(), {}, s.block_path(), e.hint());
  }
  setup.begin_index = kept.begin_index;
  s.set(sd::strength_out.name, Value(strength));
  s.set(sd::timesteps_out.name, kept.timesteps.clone());
  s.set(sd::num_inference_steps_out.name, Value(kept.num_inference_steps));
  s.set(sd::latent_timestep_out.name, kept.timesteps.slice(0, 0, 1).repeat({sd::total_batch(s)}));  // [B*n]
  s.set(flow::scheduler_setup_out.name, Value(setup.to_list()));
}

// ---------------------------------------------------------------- flux.prepare_latents

BlockSpec FluxPrepareLatentsStep::spec() const {
  return BlockSpec(kId, kDescription)
      .component(flux::transformer_component())
      .component(sd::vae_component())
      .input(flux::latents_in)
      .input(flux::height)
      .input(flux::width)
      .input(sd::batch_size)
      .input(sd::num_images_per_prompt)
      .input(sd::seed)
      .input(sd::generator)
      .output(flux::packed_latents_out)
      .output(flux::latent_image_ids_out)
      .output(sd::height_out)
      .output(sd::width_out)
      .output(sd::generator_out);
}

void FluxPrepareLatentsStep::run(Components& c, BlockState& s) const {
  c10::InferenceMode guard;
  const Size z = run_size(c, s);
  const int64_t batch = sd::total_batch(s);
  const int64_t channels = latent_channels(c);
  const std::vector<int64_t> packed_shape{batch, (z.h / 2) * (z.w / 2), channels * 4};
  at::Tensor latents;
  if (s.has(flux::latents_in.name) && !s.has(sd::seed.name) && !s.has(sd::generator.name)) {
    s.set(sd::generator_out.name, Value());  // nothing to draw (Euler draws nothing either)
  } else {
    sd::run_generator(s);
  }
  if (s.has(flux::latents_in.name)) {
    latents = s.tensor(flux::latents_in.name);
    if (latents.sizes() != at::IntArrayRef(packed_shape))
      throw InputError("latents " + Value(latents).repr() + " do not have the packed shape " +
                           shape_str(packed_shape) + " (batch " + std::to_string(batch) + ", image " +
                           std::to_string(z.height) + "×" + std::to_string(z.width) + ")",
                       {}, s.block_path(), "FLUX takes packed latents [B, (h/2)(w/2), 4C], as FluxPipeline");
    latents = latents.to(at::kFloat);
  } else {
    at::Generator gen = s.get(sd::generator_out.name).generator(sd::generator_out.name);
    latents = flux::pack_latents(sd::randn({batch, channels, z.h, z.w}, gen));  // [B, S, 4C]
  }
  s.set(flux::packed_latents_out.name, latents);
  s.set(flux::latent_image_ids_out.name, flux::make_latent_image_ids(z.h / 2, z.w / 2));
  s.set(sd::height_out.name, Value(z.height));
  s.set(sd::width_out.name, Value(z.width));
}

// ---------------------------------------------------------------- flux.img2img_prepare_latents

BlockSpec FluxImg2ImgPrepareLatentsStep::spec() const {
  return BlockSpec(kId, kDescription)
      .component(sd::scheduler_component())
      .component(flux::transformer_component())
      .input(flow::scheduler_setup)
      .input(flux::image_latents)
      .input(sd::latent_timestep)
      .input(sd::batch_size)
      .input(sd::num_images_per_prompt)
      .input(sd::seed)
      .input(sd::generator)
      .output(flux::packed_latents_out)
      .output(flux::latent_image_ids_out)
      .output(flux::noise_out)
      .output(sd::generator_out);
}

void FluxImg2ImgPrepareLatentsStep::run(Components& c, BlockState& s) const {
  c10::InferenceMode guard;
  auto scheduler = c.get_as<Scheduler>("scheduler");
  flow::ensure_scheduler(*scheduler, s);
  const int64_t batch = sd::total_batch(s);
  at::Tensor init = sd::expand_to_batch(s.tensor(flux::image_latents.name), batch, "image", s.block_path());
  if (init.size(1) != latent_channels(c))
    throw InputError("image_latents have " + std::to_string(init.size(1)) + " channels; the transformer takes " +
                         std::to_string(latent_channels(c)) + " × 4 packed",
                     {}, s.block_path());
  at::Generator gen = sd::run_generator(s);
  at::Tensor noise = sd::randn(init.sizes(), gen);  // [B, C, h, w]
  at::Tensor latents = scheduler->scale_noise(init, s.tensor(sd::latent_timestep.name), noise);
  s.set(flux::packed_latents_out.name, flux::pack_latents(latents));
  s.set(flux::latent_image_ids_out.name, flux::make_latent_image_ids(init.size(2) / 2, init.size(3) / 2));
  s.set(flux::noise_out.name, noise);
}

}  // namespace tessera
