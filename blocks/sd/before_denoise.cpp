#include "blocks/sd/before_denoise.h"

#include "blocks/common/image_processor.h"
#include "blocks/common/params.h"
#include "blocks/sd/sd_common.h"
#include "blocks/sd/sd_params.h"
#include "tessera/components.h"
#include "models/unet/unet_2d_condition.h"
#include "models/vae/autoencoder_kl.h"
#include "schedulers/scheduler.h"
#include "schedulers/strength.h"

namespace tessera {

namespace {

/// Image size for text2image: the inputs, else unet.sample_size × the VAE factor (diffusers' default).
std::pair<int64_t, int64_t> text2image_size(Components& c, const BlockState& s, int64_t f, bool independent) {
  auto size_default = [&]() -> int64_t {
    auto unet = c.get_as<UNet2DConditionModelImpl>("unet");
    if (!unet->config.sample_size)
      throw InputError("height/width are not given and the UNet config has no sample_size", {}, s.block_path(),
                       "--set height=512 --set width=512");
    return *unet->config.sample_size * f;
  };
  // diffusers' StableDiffusionPipeline: `if not height or not width`, both come from the UNet's sample size.
  // SDXL defaults each side on its own.
  const bool both = s.has(sd::height.name) && s.has(sd::width.name);
  const int64_t h = (both || (independent && s.has(sd::height.name))) ? s.get_int(sd::height.name) : size_default();
  const int64_t w = (both || (independent && s.has(sd::width.name))) ? s.get_int(sd::width.name) : size_default();
  sd::check_image_size(h, w, f, s.block_path());
  return {h, w};
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t k = 0; k < shape.size(); ++k) out += (k ? ", " : "") + std::to_string(shape[k]);
  return out + "]";
}

std::optional<int64_t> opt_int(const BlockState& s, const std::string& name) {
  return s.has(name) ? std::optional<int64_t>(s.get_int(name)) : std::nullopt;
}

}  // namespace

// ---------------------------------------------------------------- sd.set_timesteps

BlockSpec SDSetTimestepsStep::spec() const {
  return BlockSpec(kId, kDescription)
      .component(sd::scheduler_component())
      .input(sd::num_inference_steps)
      .output(sd::timesteps_out)
      .output(sd::num_inference_steps_out)
      .output(sd::scheduler_setup_out);
}

void SDSetTimestepsStep::run(Components& c, BlockState& s) const {
  auto scheduler = c.get_as<Scheduler>("scheduler");
  const int64_t n = s.get_int(sd::num_inference_steps.name);
  try {
    scheduler->set_timesteps(n);
  } catch (const ValidationError& e) {
    throw InputError(e.message(), {}, s.block_path(), e.hint());
  }
  s.set(sd::timesteps_out.name, scheduler->timesteps().clone());
  s.set(sd::num_inference_steps_out.name, Value(n));
  s.set(sd::scheduler_setup_out.name, Value(std::vector<int64_t>{n, 0}));
}

// ---------------------------------------------------------------- sd.img2img_set_timesteps

SDImg2ImgSetTimestepsStep::SDImg2ImgSetTimestepsStep(const ValueMap& p)
    : default_strength_(param_value(p, default_strength).to_float(default_strength.name)) {
  if (!(default_strength_ > 0.0 && default_strength_ <= 1.0))
    throw std::invalid_argument("param 'default_strength' must be in (0, 1], got " + std::to_string(default_strength_));
}

BlockSpec SDImg2ImgSetTimestepsStep::spec() const {
  return BlockSpec(kId, kDescription)
      .component(sd::scheduler_component())
      .input(sd::num_inference_steps)
      .input(sd::strength)
      .input(sd::batch_size)
      .input(sd::num_images_per_prompt)
      .output(sd::timesteps_out)
      .output(sd::num_inference_steps_out)
      .output(sd::latent_timestep_out)
      .output(sd::scheduler_setup_out)
      .output(sd::strength_out);
}

void SDImg2ImgSetTimestepsStep::run(Components& c, BlockState& s) const {
  auto scheduler = c.get_as<Scheduler>("scheduler");
  const int64_t n = s.get_int(sd::num_inference_steps.name);
  const int64_t batch = sd::total_batch(s);
  const double strength = s.has(sd::strength.name) ? s.get_float(sd::strength.name) : default_strength_;
  s.set(sd::strength_out.name, Value(strength));
  StrengthTimesteps kept;
  try {
    scheduler->set_timesteps(n);
    kept = strength_timesteps(*scheduler, n, strength);
  } catch (const Error& e) {
    throw InputError(e.message(), {}, s.block_path(), e.hint());
  }
  s.set(sd::timesteps_out.name, kept.timesteps.clone());
  s.set(sd::num_inference_steps_out.name, Value(kept.num_inference_steps));
  s.set(sd::latent_timestep_out.name, kept.timesteps.slice(0, 0, 1).repeat({batch}));  // [B*n]
  s.set(sd::scheduler_setup_out.name, Value(std::vector<int64_t>{n, kept.begin_index}));
}

// ---------------------------------------------------------------- sd.prepare_latents

SDPrepareLatentsStep::SDPrepareLatentsStep(const ValueMap& p)
    : independent_sizes_(param_value(p, independent_sizes).to_bool(independent_sizes.name)) {}

BlockSpec SDPrepareLatentsStep::spec() const {
  return BlockSpec(kId, kDescription)
      .component(sd::unet_component())
      .component(sd::vae_component())
      .component(sd::scheduler_component())
      .input(sd::scheduler_setup)
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

void SDPrepareLatentsStep::run(Components& c, BlockState& s) const {
  c10::InferenceMode guard;
  auto vae = c.get_as<AutoencoderKLImpl>("vae");
  auto scheduler = c.get_as<Scheduler>("scheduler");
  sd::ensure_scheduler(*scheduler, s);
  const int64_t f = sd::vae_scale_factor(*vae);
  auto [h, w] = text2image_size(c, s, f, independent_sizes_);
  const int64_t batch = sd::total_batch(s);
  // Text-to-image latents have the UNet's input channels (diffusers' num_channels_latents).
  const int64_t channels = c.get_as<UNet2DConditionModelImpl>("unet")->config.in_channels;
  const std::vector<int64_t> shape{batch, channels, h / f, w / f};
  at::Tensor latents;
  if (s.has(sd::latents_in.name) && !s.has(sd::seed.name) && !s.has(sd::generator.name)) {
    // Given latents and no seed: nothing to draw here; a stochastic scheduler then draws from its default
    // generator, as diffusers does with generator=None.
    s.set(sd::generator_out.name, Value());
  } else {
    sd::run_generator(s);
  }
  if (s.has(sd::latents_in.name)) {
    latents = s.tensor(sd::latents_in.name);
    if (latents.sizes() != at::IntArrayRef(shape))
      throw InputError("latents " + Value(latents).repr() + " do not have the expected shape " + shape_str(shape) +
                           " (batch " + std::to_string(batch) + ", image " + std::to_string(h) + "×" +
                           std::to_string(w) + ", VAE factor " + std::to_string(f) + ")",
                       {}, s.block_path());
    latents = latents.to(at::kFloat);
  } else {
    at::Generator gen = s.get(sd::generator_out.name).generator(sd::generator_out.name);
    latents = sd::randn(shape, gen);
  }
  s.set(sd::latents_out.name, latents * scheduler->init_noise_sigma());
  s.set(sd::height_out.name, Value(h));
  s.set(sd::width_out.name, Value(w));
}

// ---------------------------------------------------------------- sd.img2img_prepare_latents

BlockSpec SDImg2ImgPrepareLatentsStep::spec() const {
  return BlockSpec(kId, kDescription)
      .component(sd::scheduler_component())
      .input(sd::scheduler_setup)
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

void SDImg2ImgPrepareLatentsStep::run(Components& c, BlockState& s) const {
  c10::InferenceMode guard;
  auto scheduler = c.get_as<Scheduler>("scheduler");
  sd::ensure_scheduler(*scheduler, s);
  const int64_t batch = sd::total_batch(s);
  at::Tensor init = sd::expand_to_batch(s.tensor(sd::image_latents.name), batch, "image", s.block_path());
  at::Generator gen = sd::run_generator(s);
  at::Tensor noise = sd::randn(init.sizes(), gen);
  s.set(sd::latents_out.name, scheduler->add_noise(init, noise, s.tensor(sd::latent_timestep.name)));
  s.set(sd::noise_out.name, noise);
}

// ---------------------------------------------------------------- sd.inpaint_prepare_latents

BlockSpec SDInpaintPrepareLatentsStep::spec() const {
  InputParam image = sd::image, mask_image = sd::mask_image;
  image.required = mask_image.required = true;
  return BlockSpec(kId, kDescription)
      .component(sd::unet_component())
      .component(sd::vae_component())
      .component(sd::scheduler_component())
      .input(sd::scheduler_setup)
      .config(sd::vae_tiling)
      .input(image)
      .input(mask_image)
      .input(sd::latents_in)
      .input(sd::height)
      .input(sd::width)
      .input(sd::strength)
      .input(sd::latent_timestep)
      .input(sd::batch_size)
      .input(sd::num_images_per_prompt)
      .input(sd::seed)
      .input(sd::generator)
      .output(sd::latents_out)
      .output(sd::image_latents_out)
      .output(sd::noise_out)
      .output(sd::mask_out)
      .output(sd::masked_image_latents_out)
      .output(sd::height_out)
      .output(sd::width_out)
      .output(sd::generator_out);
}

void SDInpaintPrepareLatentsStep::run(Components& c, BlockState& s) const {
  c10::InferenceMode guard;
  auto unet = c.get_as<UNet2DConditionModelImpl>("unet");
  auto vae = c.get_as<AutoencoderKLImpl>("vae");
  sd::apply_vae_tiling(c, *vae);
  auto scheduler = c.get_as<Scheduler>("scheduler");
  sd::ensure_scheduler(*scheduler, s);
  const int64_t f = sd::vae_scale_factor(*vae);
  const at::Tensor& pixels = s.get(sd::image.name).images(sd::image.name).pixels;
  const at::Tensor& mask_pixels = s.get(sd::mask_image.name).images(sd::mask_image.name).pixels;
  // As the inpainting pipelines: a missing side defaults to unet.sample_size × factor (not the image's size),
  // and the image and mask are resized to it.
  auto unet_side = [&]() -> std::optional<int64_t> {
    if (!unet->config.sample_size) return std::nullopt;
    return *unet->config.sample_size * f;
  };
  const std::optional<int64_t> h_in = s.has(sd::height.name) ? opt_int(s, sd::height.name) : unet_side();
  const std::optional<int64_t> w_in = s.has(sd::width.name) ? opt_int(s, sd::width.name) : unet_side();
  auto [h, w] = default_height_width(pixels, h_in, w_in, f);
  sd::check_image_size(h, w, f, s.block_path());
  const int64_t batch = sd::total_batch(s);
  const int64_t unet_channels = unet->config.in_channels;
  const int64_t latent_channels = vae->config.latent_channels;
  if (unet_channels != latent_channels && unet_channels != 2 * latent_channels + 1)
    throw InputError("the UNet takes " + std::to_string(unet_channels) + " channels; inpainting needs " +
                         std::to_string(latent_channels) + " (mask blending) or " +
                         std::to_string(2 * latent_channels + 1) + " (an inpainting UNet)",
                     {}, s.block_path());
  const bool blend = unet_channels == latent_channels;
  if (!s.has(sd::strength.name))
    throw InputError("strength is not set (sd.img2img_set_timesteps sets it before this block)", {}, s.block_path());
  const bool strength_max = s.get_float(sd::strength.name) == 1.0;

  at::Tensor init_image = preprocess_image(pixels, h, w, "lanczos", f);       // [b, 3, h, w] in [-1, 1]
  at::Tensor mask_cond = preprocess_mask(mask_pixels, h, w, "lanczos", f);    // [b, 1, h, w], 1 = repaint
  at::Tensor masked_image = init_image * (mask_cond < 0.5);     // repainted area blanked (0 = mid-gray)
  at::Generator gen = sd::run_generator(s);

  // Draw order as StableDiffusionInpaintPipeline: image latents, noise, masked-image latents.
  at::Tensor image_latents;
  if (blend || (!s.has(sd::latents_in.name) && !strength_max))
    image_latents = sd::expand_to_batch(sd::encode_image(*vae, init_image, gen), batch, "image", s.block_path());
  const std::vector<int64_t> shape{batch, latent_channels, h / f, w / f};
  at::Tensor noise, latents;
  if (s.has(sd::latents_in.name)) {
    noise = s.tensor(sd::latents_in.name).to(at::kFloat);
    if (noise.sizes() != at::IntArrayRef(shape))
      throw InputError("latents " + Value(noise).repr() + " do not have the expected shape " + shape_str(shape), {},
                       s.block_path());
    latents = noise * scheduler->init_noise_sigma();
  } else {
    noise = sd::randn(shape, gen);
    latents = strength_max ? noise * scheduler->init_noise_sigma()
                           : scheduler->add_noise(image_latents, noise, s.tensor(sd::latent_timestep.name));
  }
  at::Tensor mask = at::upsample_nearest2d(mask_cond, {h / f, w / f});  // [b, 1, h/f, w/f]
  at::Tensor masked_latents;
  if (blend) {
    // A 4-channel UNet never reads them; draw what encoding would so later draws stay where diffusers has them.
    sd::randn({masked_image.size(0), latent_channels, h / f, w / f}, gen);
  } else {
    masked_latents = sd::encode_image(*vae, masked_image, gen);
  }
  s.set(sd::latents_out.name, latents);
  s.set(sd::image_latents_out.name, image_latents.defined() ? Value(image_latents) : Value());
  s.set(sd::noise_out.name, noise);
  s.set(sd::mask_out.name, sd::expand_to_batch(mask, batch, "mask_image", s.block_path()));
  s.set(sd::masked_image_latents_out.name,
        masked_latents.defined() ? Value(sd::expand_to_batch(masked_latents, batch, "image", s.block_path()))
                                 : Value());
  s.set(sd::height_out.name, Value(h));
  s.set(sd::width_out.name, Value(w));
}

}  // namespace tessera
