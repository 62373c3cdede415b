#include "blocks/flux/denoise.h"

#include "blocks/flux/flux_params.h"
#include "blocks/sd/sd_common.h"
#include "tessera/components.h"
#include "guiders/guider.h"
#include "models/transformers/transformer_flux.h"

namespace tessera {

namespace {
const ConfigSpec kBatchPasses{"batch_passes", Value(true),
                              "Run a step's guider passes as one batched transformer call (false: one call per pass)"};
}  // namespace

BlockSpec FluxLoopDenoiserStep::spec() const {
  InputParam pe{"prompt_embeds", Kind::Tensor, "T5 text embeddings [B, S_txt, J]", true};
  InputParam pooled{"pooled_prompt_embeds", Kind::Tensor, "CLIP pooled text embeddings [B, P]", true};
  InputParam steps{"num_inference_steps", Kind::Int, "Denoising steps of the loop", true};
  return BlockSpec(kId, kDescription)
      .component(flux::transformer_component())
      .component(flux::guider_component())
      .config(kBatchPasses)
      .input(flux::packed_latents)
      .input(sd::t)
      .input(sd::i)
      .input(steps)
      .input(pe)
      .input(sd::negative_prompt_embeds_in)
      .input(pooled)
      .input(sd::negative_pooled_prompt_embeds_in)
      .input(flux::text_ids)
      .input(flux::latent_image_ids)
      .input(flux::guidance_scale)
      .output(sd::noise_pred_out)
      .output(flux::transformer_timestep_out)
      .output(flux::transformer_guidance_out);
}

void FluxLoopDenoiserStep::run(Components& c, BlockState& s) const {
  c10::InferenceMode guard;
  auto transformer = c.get_as<FluxTransformer2DModelImpl>("transformer");
  auto guider = c.get_as<Guider>("guider");
  const at::Tensor& t = s.tensor(sd::t.name);
  guider->set_state(s.get_int(sd::i.name), s.get_int("num_inference_steps"), t);
  const at::Tensor& latents = s.tensor(flux::packed_latents.name);
  const bool dev = transformer->config.guidance_embeds;
  const double guidance_scale = s.get_float(flux::guidance_scale.name);

  auto pair = [&](const std::string& cond, const std::string& uncond) {
    return std::make_pair(s.has(cond) ? s.tensor(cond) : at::Tensor(),
                          s.has(uncond) ? s.tensor(uncond) : at::Tensor());
  };
  GuiderFields fields;
  fields["hidden_states"] = {latents, at::Tensor()};
  fields["encoder_hidden_states"] = pair("prompt_embeds", "negative_prompt_embeds");
  fields["pooled_projections"] = pair("pooled_prompt_embeds", "negative_pooled_prompt_embeds");
  if (sd::needs_unconditional(*guider) &&
      (!fields["encoder_hidden_states"].second.defined() || !fields["pooled_projections"].second.defined()))
    throw InputError("guider " + guider->type() + " needs unconditional inputs at step " +
                         std::to_string(s.get_int(sd::i.name)) + ", but there are no negative prompt embeddings",
                     {}, s.block_path(), "give a negative_prompt and let flux.text_encoder run with the same guider");

  const at::Tensor& txt_ids = s.tensor(flux::text_ids.name);
  const at::Tensor& img_ids = s.tensor(flux::latent_image_ids.name);
  at::Tensor last_timestep, last_guidance;
  GuiderModelFn model = [&](const std::map<std::string, at::Tensor>& in, const std::vector<LayerHook>& hooks) {
    const at::Tensor& hidden = in.at("hidden_states");
    const int64_t rows = hidden.size(0);
    // FluxPipeline: timestep = t.expand(B).to(latents.dtype) / 1000; guidance = full([B], guidance_scale).
    at::Tensor timestep = t.to(at::kFloat).expand({rows}).contiguous() / 1000;
    FluxTransformerInputs extra;
    extra.hooks = hooks;
    at::Tensor guidance;
    if (dev) {
      guidance = at::full({rows}, guidance_scale, at::kFloat);
      last_guidance = last_guidance.defined() ? at::cat({last_guidance, guidance}) : guidance;
    }
    last_timestep = last_timestep.defined() ? at::cat({last_timestep, timestep}) : timestep;
    const at::Tensor& ehs = in.at("encoder_hidden_states");
    const at::Tensor& pooled = in.at("pooled_projections");
    transformer->check_inputs(hidden, ehs, pooled, timestep, img_ids, txt_ids, guidance, extra);
    return transformer->forward(hidden, ehs, pooled, timestep, img_ids, txt_ids, guidance, extra);
  };
  const bool batch = c.config(kBatchPasses.name).to_bool(kBatchPasses.name);
  s.set(sd::noise_pred_out.name, guide(*guider, fields, model, batch).pred);
  s.set(flux::transformer_timestep_out.name, last_timestep);
  s.set(flux::transformer_guidance_out.name, last_guidance.defined() ? Value(last_guidance) : Value());
}

}  // namespace tessera
