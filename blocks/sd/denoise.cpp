#include "blocks/sd/denoise.h"

#include "blocks/sd/sd_common.h"
#include "blocks/sd/sd_params.h"
#include "tessera/components.h"
#include "guiders/guider.h"
#include "models/unet/unet_2d_condition.h"
#include "schedulers/scheduler.h"

namespace tessera {

const ConfigSpec sd::batch_passes{"batch_passes", Value(true),
                                  "Run a step's guider passes as one batched UNet call (false: one call per pass)"};
namespace {
const ConfigSpec& kBatchPasses = sd::batch_passes;
}  // namespace

// ---------------------------------------------------------------- sd.loop_before_denoiser

BlockSpec SDLoopBeforeDenoiserStep::spec() const {
  InputParam mask = sd::mask;
  mask.required = false;
  return BlockSpec(kId, kDescription)
      .component(sd::scheduler_component())
      .input(sd::scheduler_setup)
      .input(sd::latents)
      .input(sd::t)
      .input(mask)
      .input(sd::masked_image_latents)
      .output(sd::latent_model_input_out);
}

void SDLoopBeforeDenoiserStep::run(Components& c, BlockState& s) const {
  auto scheduler = c.get_as<Scheduler>("scheduler");
  sd::ensure_scheduler(*scheduler, s);
  const at::Tensor& t = s.tensor(sd::t.name);
  at::Tensor x = scheduler->scale_model_input(s.tensor(sd::latents.name), t.item<double>());
  if (s.has(sd::masked_image_latents.name)) {
    if (!s.has(sd::mask.name))
      throw InputError("masked_image_latents are given without a mask", {}, s.block_path());
    x = at::cat({x, s.tensor(sd::mask.name).to(x.scalar_type()),
                 s.tensor(sd::masked_image_latents.name).to(x.scalar_type())},
                1);  // [B, C + 1 + C, h, w]
  }
  s.set(sd::latent_model_input_out.name, x);
}

// ---------------------------------------------------------------- sd.loop_denoiser

BlockSpec SDLoopDenoiserStep::spec() const {
  InputParam pe{"prompt_embeds", Kind::Tensor, "Text embeddings [B, seq, D]", true};
  InputParam steps{"num_inference_steps", Kind::Int, "Denoising steps of the loop", true};
  return BlockSpec(kId, kDescription)
      .component(sd::unet_component())
      .component(sd::guider_component())
      .config(kBatchPasses)
      .input(sd::latent_model_input)
      .input(sd::t)
      .input(sd::i)
      .input(steps)
      .input(pe)
      .input(sd::negative_prompt_embeds_in)
      .input(sd::pooled_prompt_embeds_in)
      .input(sd::negative_pooled_prompt_embeds_in)
      .input(sd::add_time_ids)
      .input(sd::negative_add_time_ids)
      .input(sd::guidance_scale)
      .input(sd::guidance_rescale)
      .input(sd::ip_adapter_tokens)
      .input(sd::negative_ip_adapter_tokens)
      .output(sd::noise_pred_out);
}

void SDLoopDenoiserStep::run(Components& c, BlockState& s) const {
  s.set(sd::noise_pred_out.name, sd::guided_unet_prediction(c, s, {}, {}));
}

at::Tensor sd::guided_unet_prediction(Components& c, BlockState& s, const GuiderFields& extra_fields,
                                      const UNetCallHook& before_unet) {
  c10::InferenceMode guard;
  auto unet = c.get_as<UNet2DConditionModelImpl>("unet");
  auto guider = c.get_as<Guider>("guider");
  sd::apply_guidance_scale(*guider, s);
  const at::Tensor& t = s.tensor(sd::t.name);
  guider->set_state(s.get_int(sd::i.name), s.get_int("num_inference_steps"), t);

  auto pair = [&](const std::string& cond, const std::string& uncond) {
    return std::make_pair(s.has(cond) ? s.tensor(cond) : at::Tensor(),
                          s.has(uncond) ? s.tensor(uncond) : at::Tensor());
  };
  GuiderFields fields;
  fields["sample"] = {s.tensor(sd::latent_model_input.name), at::Tensor()};
  fields["encoder_hidden_states"] = pair("prompt_embeds", "negative_prompt_embeds");
  const bool sdxl = unet->config.addition_embed_type.has_value();
  if (sdxl) {
    fields["text_embeds"] = pair("pooled_prompt_embeds", "negative_pooled_prompt_embeds");
    fields["time_ids"] = pair("add_time_ids", "negative_add_time_ids");
    if (!fields["text_embeds"].first.defined() || !fields["time_ids"].first.defined())
      throw InputError("this UNet (addition_embed_type " + *unet->config.addition_embed_type +
                           ") needs pooled_prompt_embeds and add_time_ids, which the pipeline did not produce",
                       {}, s.block_path(), "use an SDXL recipe (recipes/sdxl/auto.yaml) for an SDXL model");
  }
  if (sd::needs_unconditional(*guider)) {
    for (const auto& [name, p] : fields)
      if (p.first.defined() && name != "sample" && !p.second.defined())
        throw InputError("guider " + guider->type() + " needs unconditional inputs at step " +
                             std::to_string(s.get_int(sd::i.name)) + ", but there is no negative for '" + name + "'",
                         {}, s.block_path(), "let the text encoder step run with the same guider");
  }
  // IP-Adapter tokens (sd.prepare_ip_adapter installed the adapter on the UNet): batched with the passes.
  const bool ip = s.has(sd::ip_adapter_tokens.name);
  if (ip) fields["ip_hidden_states"] = pair(sd::ip_adapter_tokens.name, sd::negative_ip_adapter_tokens.name);
  for (const auto& [name, p] : extra_fields) fields[name] = p;
  GuiderModelFn model = [&](const std::map<std::string, at::Tensor>& in, const std::vector<LayerHook>& hooks) {
    const at::Tensor& sample = in.at("sample");
    UNet2DConditionInputs extra;
    extra.hooks = hooks;
    if (sdxl) {
      extra.text_embeds = in.at("text_embeds");
      extra.time_ids = in.at("time_ids");
    }
    if (ip) extra.ip_hidden_states = {in.at("ip_hidden_states")};
    if (before_unet) before_unet(in, extra);
    return unet->forward(sample, t, in.at("encoder_hidden_states"), extra);
  };
  const bool batch = c.config(kBatchPasses.name).to_bool(kBatchPasses.name);
  return guide(*guider, fields, model, batch).pred;
}

// ---------------------------------------------------------------- sd.loop_scheduler_step

BlockSpec SDLoopSchedulerStep::spec() const {
  return BlockSpec(kId, kDescription)
      .component(sd::scheduler_component())
      .input(sd::scheduler_setup)
      .input(sd::noise_pred)
      .input(sd::t)
      .input(sd::latents)
      .input(sd::eta)
      .input(sd::generator)
      .output(sd::latents_out);
}

void SDLoopSchedulerStep::run(Components& c, BlockState& s) const {
  c10::InferenceMode guard;
  auto scheduler = c.get_as<Scheduler>("scheduler");
  sd::ensure_scheduler(*scheduler, s);
  const double eta = s.get_float(sd::eta.name);
  try {
    scheduler->set_step_option("eta", eta);
  } catch (const ValidationError& e) {
    // diffusers passes eta only to schedulers whose step takes it; a non-zero eta elsewhere is a mistake.
    if (eta != 0.0) throw InputError(e.message(), {}, s.block_path(), "eta applies to DDIM-type schedulers");
  }
  std::optional<at::Generator> gen;
  if (s.has(sd::generator.name)) gen = s.get(sd::generator.name).generator(sd::generator.name);
  const at::Tensor& latents = s.tensor(sd::latents.name);
  SchedulerOutput out = scheduler->step(s.tensor(sd::noise_pred.name).to(latents.scalar_type()),
                                        s.tensor(sd::t.name).item<double>(), latents, gen);
  s.set(sd::latents_out.name, out.prev_sample);
}

// ---------------------------------------------------------------- sd.loop_inpaint_blend

BlockSpec SDLoopInpaintBlendStep::spec() const {
  return BlockSpec(kId, kDescription)
      .component(sd::scheduler_component())
      .input(sd::scheduler_setup)
      .input(sd::latents)
      .input(sd::i)
      .input(sd::timesteps)
      .input(sd::mask)
      .input(sd::image_latents_opt)
      .input(sd::noise)
      .input(sd::masked_image_latents)
      .output(sd::latents_out);
}

void SDLoopInpaintBlendStep::run(Components& c, BlockState& s) const {
  c10::InferenceMode guard;
  auto scheduler = c.get_as<Scheduler>("scheduler");
  sd::ensure_scheduler(*scheduler, s);
  if (s.has(sd::masked_image_latents.name)) {  // a 9-channel inpainting UNet sees the mask itself: no blending
    s.set(sd::latents_out.name, s.get(sd::latents.name));
    return;
  }
  if (!s.has(sd::image_latents_opt.name))
    throw InputError("mask blending needs image_latents, which the pipeline did not produce", {}, s.block_path());
  const int64_t i = s.get_int(sd::i.name);
  const at::Tensor& timesteps = s.tensor(sd::timesteps.name);
  at::Tensor proper = s.tensor(sd::image_latents_opt.name);
  if (i < timesteps.size(0) - 1)
    proper = scheduler->add_noise(proper, s.tensor(sd::noise.name), timesteps.slice(0, i + 1, i + 2));
  const at::Tensor& mask = s.tensor(sd::mask.name);
  s.set(sd::latents_out.name, (1 - mask) * proper + mask * s.tensor(sd::latents.name));
}

}  // namespace tessera
