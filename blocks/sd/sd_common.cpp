#include "blocks/sd/sd_common.h"

#include "blocks/common/flow_match.h"
#include "blocks/common/random.h"
#include "blocks/sd/sd_params.h"
#include "tessera/components.h"
#include "tessera/error.h"
#include "guiders/guider.h"
#include "models/unet/unet_2d_condition.h"
#include "models/vae/autoencoder_kl.h"
#include "schedulers/scheduler.h"

namespace tessera::sd {

// ---------------------------------------------------------------- component specs

ComponentSpec tokenizer_component(const std::string& name) {
  ComponentSpec c;
  c.name = name;
  c.type = "CLIPTokenizer";
  c.description = "CLIP tokenizer (" + name + "/ of the model folder)";
  return c;
}

ComponentSpec text_encoder_component(const std::string& name, const std::string& type) {
  ComponentSpec c;
  c.name = name;
  c.type = type;
  c.description = "CLIP text encoder (" + name + "/ of the model folder)";
  return c;
}

ComponentSpec unet_component() {
  ComponentSpec c;
  c.name = "unet";
  c.type = "UNet2DConditionModel";
  c.description = "The denoiser";
  return c;
}

ComponentSpec vae_component() {
  ComponentSpec c;
  c.name = "vae";
  c.type = "AutoencoderKL";
  c.description = "Image ↔ latent autoencoder";
  return c;
}

ComponentSpec scheduler_component() {
  ComponentSpec c;
  c.name = "scheduler";
  c.type = "EulerDiscreteScheduler";
  c.description = "Any scheduler (the recipe names it; by default the model folder's)";
  return c;
}

ComponentSpec guider_component() {
  ComponentSpec c;
  c.name = "guider";
  c.type = "ClassifierFreeGuidance";
  c.description = "Any guider; classifier-free guidance at 7.5 unless the recipe declares another";
  c.config = Value(ValueMap{{"guidance_scale", Value(7.5)}});
  c.creation = Creation::FromConfig;
  return c;
}

// ---------------------------------------------------------------- helpers

std::vector<std::string> prompt_list(const BlockState& s, const std::string& name,
                                     const std::vector<std::string>& fallback) {
  if (!s.has(name)) return fallback;
  const Value& v = s.get(name);
  if (v.kind() == Kind::String) return {v.str(name)};
  return v.string_list(name);
}

at::Generator run_generator(BlockState& s) {
  at::Generator gen;
  if (s.has(generator.name)) {  // an earlier block made it from the seed (or the caller passed one)
    gen = s.get(generator.name).generator(generator.name);
    if (!gen.device().is_cpu())
      throw InputError("'generator' must be a CPU generator (got one on " + gen.device().str() + ")", {},
                       s.block_path());
  } else {
    gen = cpu_generator(seed_or_random(s, seed.name));
  }
  s.set(generator_out.name, Value(gen));
  return gen;
}

at::Tensor randn(at::IntArrayRef shape, at::Generator& gen) {
  return at::randn(shape, gen, at::TensorOptions().dtype(at::kFloat));
}

int64_t total_batch(const BlockState& s) {
  const int64_t b = s.get_int(batch_size.name), n = s.get_int(num_images_per_prompt.name);
  if (b <= 0 || n <= 0 || b * n > 4096)
    throw InputError("batch_size × num_images_per_prompt must be in [1, 4096], got " + std::to_string(b) + " × " +
                         std::to_string(n),
                     {}, s.block_path());
  return b * n;
}

at::Tensor repeat_rows(const at::Tensor& x, int64_t n) {
  if (n == 1) return x;
  return x.repeat_interleave(n, 0);  // [B*n, …], each row's copies adjacent
}

at::Tensor expand_to_batch(const at::Tensor& x, int64_t batch, const std::string& what,
                           const std::string& block_path) {
  const int64_t b = x.size(0);
  if (b == batch) return x;
  std::vector<int64_t> reps(static_cast<size_t>(x.dim()), 1);
  reps[0] = batch / std::max<int64_t>(b, 1);
  if (b > 0 && batch % b == 0) return x.repeat(reps);  // tiled (a0 a1 a0 a1), as diffusers' .repeat / torch.cat
  throw InputError("cannot duplicate " + what + " of batch size " + std::to_string(b) + " to " +
                       std::to_string(batch) + " images",
                   {}, block_path, "give one image, or one per prompt");
}

int64_t vae_scale_factor(const AutoencoderKLImpl& vae) { return vae.vae_scale_factor(); }

std::string component_where(const Components& c, const std::string& name) {
  if (!c.has_spec(name)) return name;
  const ComponentSpec& spec = c.spec(name);
  return spec.from.empty() ? name : name + " '" + spec.from + "'";
}

std::string unet_family(const UNet2DConditionModelConfig& c) {
  if (c.addition_embed_type) return "SDXL";
  const int64_t cross = c.cross_attention_dim.empty() ? 0 : c.cross_attention_dim.front();
  if (cross == 768) return "SD 1.x";
  if (cross == 1024) return "SD 2.x";
  return "cross-attention width " + std::to_string(cross);
}

void check_image_size(int64_t height, int64_t width, int64_t factor, const std::string& block_path) {
  if (height <= 0 || width <= 0 || height % factor != 0 || width % factor != 0)
    throw InputError("height and width must be positive multiples of the VAE scale factor " + std::to_string(factor) +
                         ", got " + std::to_string(height) + "×" + std::to_string(width),
                     {}, block_path,
                     "use e.g. " + std::to_string(std::max<int64_t>(factor, height / factor * factor)) + "×" +
                         std::to_string(std::max<int64_t>(factor, width / factor * factor)));
  if (height > 16384 || width > 16384)
    throw InputError("height and width must be at most 16384, got " + std::to_string(height) + "×" +
                         std::to_string(width),
                     {}, block_path);
}

void apply_guidance_scale(Guider& guider, const BlockState& s) {
  auto opt = [&](const InputParam& p) {
    return s.has(p.name) ? std::optional<double>(s.get_float(p.name)) : std::nullopt;
  };
  std::optional<double> scale = opt(guidance_scale);
  // The standard pipelines guide only when guidance_scale > 1 (do_classifier_free_guidance); the guiders only skip
  // their no-op value. An input <= 1 therefore means "no classifier-free guidance", as in diffusers.
  if (scale && *scale <= 1.0) scale = guider.use_original_formulation() ? 0.0 : 1.0;
  guider.set_guidance_scale(scale);
  if (s.declares_input(guidance_rescale.name)) guider.set_guidance_rescale(opt(guidance_rescale));
}

bool needs_unconditional(const Guider& guider) { return guider.is_enabled() && guider.num_conditions() > 1; }

void ensure_scheduler(Scheduler& scheduler, const BlockState& s) {
  if (!s.has(scheduler_setup.name)) return;
  const auto& v = s.get(scheduler_setup.name).int_list(scheduler_setup.name);
  if (v.size() == 4) return flow::ensure_scheduler(scheduler, s);  // set up by a FLUX / SD3 block
  if (v.size() != 2) throw InputError("scheduler_setup must be [num_inference_steps, begin_index]", {}, s.block_path());
  if (scheduler.num_inference_steps() == v[0] && scheduler.timesteps().defined()) return;
  scheduler.set_timesteps(v[0]);
  if (v[1] > 0) scheduler.set_begin_index(v[1]);
}

void apply_vae_tiling(Components& c, AutoencoderKLImpl& vae) {
  vae.enable_tiling(c.config(vae_tiling.name).to_bool(vae_tiling.name));
}

// The SD and SDXL pipelines scale by scaling_factor only (shift_factor belongs to SD3/Flux VAEs; SDXL's
// latents_mean/latents_std are not supported yet: VAEs that set them are refused rather than mis-scaled).
namespace {
void check_plain_scaling(const AutoencoderKLImpl& vae) {
  if (vae.config.latents_mean || vae.config.latents_std)
    throw ModelLoadError("this VAE config sets latents_mean/latents_std, which the SD/SDXL blocks do not apply yet");
}
}  // namespace

at::Tensor to_vae_latents(const at::Tensor& z, const AutoencoderKLImpl& vae) {
  check_plain_scaling(vae);
  return z * vae.config.scaling_factor;
}

at::Tensor from_vae_latents(const at::Tensor& latents, const AutoencoderKLImpl& vae) {
  check_plain_scaling(vae);
  return latents / vae.config.scaling_factor;
}

at::Tensor encode_image(AutoencoderKLImpl& vae, const at::Tensor& image, at::Generator& gen) {
  DiagonalGaussianDistribution dist = vae.encode(image);
  return to_vae_latents(dist.sample(gen), vae);
}

}  // namespace tessera::sd
