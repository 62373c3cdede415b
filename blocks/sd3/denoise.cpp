#include "blocks/sd3/denoise.h"

#include "blocks/sd/sd_common.h"
#include "blocks/sd/sd_params.h"
#include "blocks/sd3/sd3_params.h"
#include "tessera/components.h"
#include "guiders/guider.h"
#include "models/transformers/transformer_sd3.h"

namespace tessera {

BlockSpec SD3LoopDenoiserStep::spec() const {
  InputParam pe{"prompt_embeds", Kind::Tensor, "Text embeddings [B, 77 + msl, D]", true};
  InputParam pooled{"pooled_prompt_embeds", Kind::Tensor, "Pooled text embeddings [B, P]", true};
  InputParam steps{"num_inference_steps", Kind::Int, "Denoising steps of the loop", true};
  return BlockSpec(kId, kDescription)
      .component(sd3::transformer_component())
      .component(sd3::guider_component())
      .config(sd3::batch_passes)
      .input(sd3::latents)
      .input(sd::t)
      .input(sd::i)
      .input(steps)
      .input(pe)
      .input(sd::negative_prompt_embeds_in)
      .input(pooled)
      .input(sd3::negative_pooled_prompt_embeds_in)
      .input(sd::guidance_scale)
      .output(sd::noise_pred_out)
      .output(sd3::timestep_out);
}

void SD3LoopDenoiserStep::run(Components& c, BlockState& s) const {
  c10::InferenceMode guard;
  auto transformer = c.get_as<SD3Transformer2DModelImpl>("transformer");
  auto guider = c.get_as<Guider>("guider");
  sd::apply_guidance_scale(*guider, s);
  const at::Tensor& t = s.tensor(sd::t.name);
  guider->set_state(s.get_int(sd::i.name), s.get_int("num_inference_steps"), t);

  auto pair = [&](const std::string& cond, const std::string& uncond) {
    return std::make_pair(s.tensor(cond), s.has(uncond) ? s.tensor(uncond) : at::Tensor());
  };
  GuiderFields fields;
  fields["hidden_states"] = {s.tensor(sd3::latents.name), at::Tensor()};
  fields["encoder_hidden_states"] = pair("prompt_embeds", "negative_prompt_embeds");
  fields["pooled_projections"] = pair("pooled_prompt_embeds", "negative_pooled_prompt_embeds");
  if (sd::needs_unconditional(*guider))
    for (const auto& [name, p] : fields)
      if (name != "hidden_states" && !p.second.defined())
        throw InputError("guider " + guider->type() + " needs unconditional inputs at step " +
                             std::to_string(s.get_int(sd::i.name)) + ", but there is no negative for '" + name + "'",
                         {}, s.block_path(), "let the text encoder step run with the same guider");

  std::vector<at::Tensor> timesteps;  // what each transformer call got
  GuiderModelFn model = [&](const std::map<std::string, at::Tensor>& in, const std::vector<LayerHook>& hooks) {
    const at::Tensor& hidden = in.at("hidden_states");  // [N, C, h, w]
    at::Tensor timestep = t.expand({hidden.size(0)});    // [N]: t.expand(latent_model_input.shape[0])
    timesteps.push_back(timestep);
    SD3TransformerInputs extra;
    extra.hooks = hooks;
    return transformer->forward(hidden, in.at("encoder_hidden_states"), in.at("pooled_projections"), timestep, extra);
  };
  const bool batch = c.config(sd3::batch_passes.name).to_bool(sd3::batch_passes.name);
  s.set(sd::noise_pred_out.name, guide(*guider, fields, model, batch).pred);
  s.set(sd3::timestep_out.name, at::cat(timesteps));  // [sum of N]
}

}  // namespace tessera
