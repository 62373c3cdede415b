#include "blocks/sd3/before_denoise.h"

#include "blocks/common/flow_match.h"
#include "blocks/common/params.h"
#include "blocks/sd/sd_common.h"
#include "blocks/sd/sd_params.h"
#include "blocks/sd3/sd3_common.h"
#include "blocks/sd3/sd3_params.h"
#include "tessera/components.h"
#include "models/transformers/transformer_sd3.h"
#include "models/vae/autoencoder_kl.h"
#include "schedulers/scheduler.h"
#include "schedulers/strength.h"

namespace tessera {

namespace {

/// The run's size and its image token count, from the transformer and VAE configs.
struct RunSize {
  int64_t height, width, seq_len, factor;
};

RunSize run_size(Components& c, const BlockState& s) {
  auto transformer = c.get_as<SD3Transformer2DModelImpl>("transformer");
  const int64_t f = sd::vae_scale_factor(*c.get_as<AutoencoderKLImpl>("vae"));
  auto [h, w] = sd3::image_size(s, *transformer, f);
  return {h, w, sd3::image_seq_len(h, w, *transformer, f), f};
}

std::string shape_str(at::IntArrayRef shape) {
  std::string out = "[";
  for (size_t k = 0; k < shape.size(); ++k) out += (k ? ", " : "") + std::to_string(shape[k]);
  return out + "]";
}

}  // namespace

// ---------------------------------------------------------------- sd3.set_timesteps

BlockSpec SD3SetTimestepsStep::spec() const {
  return BlockSpec(kId, kDescription)
      .component(sd3::transformer_component())
      .component(sd::vae_component())
      .component(sd::scheduler_component())
      .input(sd::num_inference_steps)
      .input(sd::height)
      .input(sd::width)
      .output(sd::timesteps_out)
      .output(sd::num_inference_steps_out)
      .output(flow::scheduler_setup_out);
}

void SD3SetTimestepsStep::run(Components& c, BlockState& s) const {
  c10::InferenceMode guard;
  const RunSize size = run_size(c, s);
  auto scheduler = c.get_as<Scheduler>("scheduler");
  const flow::FlowSetup setup{s.get_int(sd::num_inference_steps.name), 0, size.seq_len, /*flux_sigmas=*/false};
  flow::set_timesteps(*scheduler, setup, s.block_path());
  s.set(sd::timesteps_out.name, scheduler->timesteps().clone());
  s.set(sd::num_inference_steps_out.name, Value(setup.num_inference_steps));
  s.set(flow::scheduler_setup_out.name, Value(setup.to_list()));
}

// ---------------------------------------------------------------- sd3.img2img_set_timesteps

SD3Img2ImgSetTimestepsStep::SD3Img2ImgSetTimestepsStep(const ValueMap& p)
    : default_strength_(param_value(p, default_strength).to_float(default_strength.name)) {
  if (!(default_strength_ > 0.0 && default_strength_ <= 1.0))
    throw std::invalid_argument("param 'default_strength' must be in (0, 1], got " + std::to_string(default_strength_));
}

BlockSpec SD3Img2ImgSetTimestepsStep::spec() const {
  return BlockSpec(kId, kDescription)
      .component(sd3::transformer_component())
      .component(sd::vae_component())
      .component(sd::scheduler_component())
      .input(sd::num_inference_steps)
      .input(sd::strength)
      .input(sd::height)
      .input(sd::width)
      .input(sd::batch_size)
      .input(sd::num_images_per_prompt)
      .output(sd::timesteps_out)
      .output(sd::num_inference_steps_out)
      .output(sd::latent_timestep_out)
      .output(flow::scheduler_setup_out)
      .output(sd::strength_out);
}

void SD3Img2ImgSetTimestepsStep::run(Components& c, BlockState& s) const {
  c10::InferenceMode guard;
  const RunSize size = run_size(c, s);
  auto scheduler = c.get_as<Scheduler>("scheduler");
  const int64_t n = s.get_int(sd::num_inference_steps.name);
  const int64_t batch = sd::total_batch(s);
  const double strength = s.has(sd::strength.name) ? s.get_float(sd::strength.name) : default_strength_;
  s.set(sd::strength_out.name, Value(strength));
  flow::FlowSetup setup{n, 0, size.seq_len, /*flux_sigmas=*/false};
  flow::set_timesteps(*scheduler, setup, s.block_path());
  StrengthTimesteps kept;
  try {
    kept = flow_strength_timesteps(*scheduler, n, strength);  // sets the begin index on the scheduler
  } catch (const Error& e) {
    throw InputError(e.message(), {}, s.block_path(), e.hint());
  }
  setup.begin_index = kept.begin_index;
  s.set(sd::timesteps_out.name, kept.timesteps.clone());
  s.set(sd::num_inference_steps_out.name, Value(kept.num_inference_steps));
  s.set(sd::latent_timestep_out.name, kept.timesteps.slice(0, 0, 1).repeat({batch}));  // [B*n]
  s.set(flow::scheduler_setup_out.name, Value(setup.to_list()));
}

// ---------------------------------------------------------------- sd3.prepare_latents

BlockSpec SD3PrepareLatentsStep::spec() const {
  return BlockSpec(kId, kDescription)
      .component(sd3::transformer_component())
      .component(sd::vae_component())
      .input(sd::latents_in)
      .input(sd::height)
      .input(sd::width)
      .input(sd::batch_size)
      .input(sd::num_images_per_prompt)
      .input(sd::seed)
      .input(sd::generator)
      .output(sd::latents_out)
      .output(sd::height_out)
      .output(sd::width_out)
      .output(sd::generator_out);
}

void SD3PrepareLatentsStep::run(Components& c, BlockState& s) const {
  c10::InferenceMode guard;
  const RunSize size = run_size(c, s);
  const int64_t batch = sd::total_batch(s);
  const int64_t channels = c.get_as<SD3Transformer2DModelImpl>("transformer")->config.in_channels;
  const std::vector<int64_t> shape{batch, channels, size.height / size.factor, size.width / size.factor};
  if (s.has(sd::latents_in.name) && !s.has(sd::seed.name) && !s.has(sd::generator.name)) {
    s.set(sd::generator_out.name, Value());  // given latents and no seed: nothing draws from a generator
  } else {
    sd::run_generator(s);
  }
  at::Tensor latents;
  if (s.has(sd::latents_in.name)) {
    latents = s.tensor(sd::latents_in.name);
    if (latents.sizes() != at::IntArrayRef(shape))
      throw InputError("latents " + Value(latents).repr() + " do not have the expected shape " + shape_str(shape) +
                           " (batch " + std::to_string(batch) + ", image " + std::to_string(size.height) + "×" +
                           std::to_string(size.width) + ", VAE factor " + std::to_string(size.factor) + ")",
                       {}, s.block_path());
    latents = latents.to(at::kFloat);
  } else {
    at::Generator gen = s.get(sd::generator_out.name).generator(sd::generator_out.name);
    latents = sd::randn(shape, gen);  // [B, C, H/f, W/f]
  }
  s.set(sd::latents_out.name, latents);
  s.set(sd::height_out.name, Value(size.height));
  s.set(sd::width_out.name, Value(size.width));
}

// ---------------------------------------------------------------- sd3.img2img_prepare_latents

BlockSpec SD3Img2ImgPrepareLatentsStep::spec() const {
  return BlockSpec(kId, kDescription)
      .component(sd::scheduler_component())
      .input(flow::scheduler_setup)
      .input(sd::image_latents)
      .input(sd::latent_timestep)
      .input(sd::batch_size)
      .input(sd::num_images_per_prompt)
      .input(sd::seed)
      .input(sd::generator)
      .output(sd::latents_out)
      .output(sd::noise_out)
      .output(sd::generator_out);
}

void SD3Img2ImgPrepareLatentsStep::run(Components& c, BlockState& s) const {
  c10::InferenceMode guard;
  auto scheduler = c.get_as<Scheduler>("scheduler");
  flow::ensure_scheduler(*scheduler, s);
  const int64_t batch = sd::total_batch(s);
  at::Tensor init = sd::expand_to_batch(s.tensor(sd::image_latents.name), batch, "image", s.block_path());
  at::Generator gen = sd::run_generator(s);
  at::Tensor noise = sd::randn(init.sizes(), gen);  // [B, C, h, w], after the VAE sample
  s.set(sd::latents_out.name, scheduler->scale_noise(init, s.tensor(sd::latent_timestep.name), noise));
  s.set(sd::noise_out.name, noise);
}

}  // namespace tessera
