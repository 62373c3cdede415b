#include "blocks/flux/encoders.h"

#include "blocks/common/flow_match.h"
#include "blocks/common/image_processor.h"
#include "blocks/flux/flux_common.h"
#include "blocks/flux/flux_params.h"
#include "blocks/sd/sd_common.h"
#include "tessera/components.h"
#include "guiders/guider.h"
#include "models/text/clip_text_model.h"
#include "models/text/clip_tokenizer.h"
#include "models/text/t5_encoder.h"
#include "models/text/t5_tokenizer.h"
#include "models/transformers/transformer_flux.h"
#include "models/vae/autoencoder_kl.h"

namespace tessera {

namespace {

/// Python's `x or fallback` for prompt lists: absent, empty or a single "" falls back.
std::vector<std::string> or_fallback(std::vector<std::string> v, const std::vector<std::string>& fallback) {
  const bool empty = v.empty() || (v.size() == 1 && v[0].empty());
  return empty ? fallback : v;
}

std::vector<std::string> matched(std::vector<std::string> v, int64_t b, const std::string& what,
                                 const std::string& path) {
  if (v.size() == 1 && b > 1) v.assign(static_cast<size_t>(b), v[0]);
  if (static_cast<int64_t>(v.size()) != b)
    throw InputError(what + " has " + std::to_string(v.size()) + " entries but there are " + std::to_string(b) +
                         " prompts",
                     {}, path, "give one, or one per prompt");
  return v;
}

struct Encoded {
  at::Tensor embeds, pooled;  // [B, S, J] from T5, [B, P] from CLIP
};

Encoded encode(Components& c, const std::vector<std::string>& clip_prompts, const std::vector<std::string>& t5_prompts,
               int64_t max_sequence_length) {
  auto tok = c.get_as<CLIPTokenizer>("tokenizer");
  auto te = c.get_as<CLIPTextModelImpl>("text_encoder");
  at::Tensor ids = (*tok)(clip_prompts, tok->model_max_length()).input_ids;  // [B, 77]
  at::Tensor pooled = te->forward(ids).pooler_output;                        // [B, P]
  auto tok_2 = c.get_as<T5Tokenizer>("tokenizer_2");
  auto te_2 = c.get_as<T5EncoderModelImpl>("text_encoder_2");
  at::Tensor ids_2 = (*tok_2)(t5_prompts, max_sequence_length).input_ids;  // [B, L]
  te_2->check_input_ids(ids_2);
  at::Tensor embeds = te_2->forward(ids_2).last_hidden_state;  // [B, L, J], no attention mask (as FluxPipeline)
  return {embeds.to(at::kFloat), pooled.to(at::kFloat)};
}

}  // namespace

// ---------------------------------------------------------------- flux.text_encoder

BlockSpec FluxTextEncoderStep::spec() const {
  InputParam pe = sd::prompt_embeds_in, pooled = sd::pooled_prompt_embeds_in;
  return BlockSpec(kId, kDescription)
      .component(sd::tokenizer_component("tokenizer"))
      .component(sd::text_encoder_component("text_encoder"))
      .component(flux::t5_tokenizer_component())
      .component(flux::t5_encoder_component())
      .component(flux::guider_component())
      .input(sd::prompt)
      .input(flux::prompt_2)
      .input(sd::negative_prompt)
      .input(flux::negative_prompt_2)
      .input(flux::max_sequence_length)
      .input(flux::true_cfg_scale)
      .input(pe)
      .input(pooled)
      .output(flux::prompt_embeds_out)
      .output(flux::negative_prompt_embeds_out)
      .output(flux::pooled_prompt_embeds_out)
      .output(flux::negative_pooled_prompt_embeds_out)
      .output(flux::text_ids_out);
}

void FluxTextEncoderStep::run(Components& c, BlockState& s) const {
  c10::InferenceMode guard;
  auto guider = c.get_as<Guider>("guider");
  if (s.has(flux::true_cfg_scale.name))
    guider->set_guidance_scale(s.get_float(flux::true_cfg_scale.name));
  else
    guider->set_guidance_scale(std::nullopt);
  const int64_t msl = s.get_int(flux::max_sequence_length.name);
  if (msl <= 0 || msl > 512)
    throw InputError("max_sequence_length must be in [1, 512] (FLUX.1's T5 limit), got " + std::to_string(msl), {},
                     s.block_path());

  at::Tensor embeds, pooled;
  std::vector<std::string> prompts;
  if (s.has(sd::prompt_embeds_in.name)) {
    if (!s.has(sd::pooled_prompt_embeds_in.name))
      throw InputError("prompt_embeds are given without pooled_prompt_embeds (FLUX needs both)", {}, s.block_path());
    embeds = s.tensor(sd::prompt_embeds_in.name).to(at::kFloat);
    pooled = s.tensor(sd::pooled_prompt_embeds_in.name).to(at::kFloat);
  } else {
    prompts = sd::prompt_list(s, sd::prompt.name);
    if (prompts.empty()) throw InputError("give a prompt", {}, s.block_path(), "--set prompt=\"a photo of a cat\"");
    const int64_t b = static_cast<int64_t>(prompts.size());
    auto prompts_2 = matched(or_fallback(sd::prompt_list(s, flux::prompt_2.name), prompts), b, "prompt_2",
                             s.block_path());
    Encoded e = encode(c, prompts, prompts_2, msl);
    embeds = e.embeds;
    pooled = e.pooled;
  }
  s.set(sd::prompt_embeds.name, embeds);
  s.set(sd::pooled_prompt_embeds.name, pooled);
  s.set(flux::text_ids_out.name, at::zeros({embeds.size(1), 3}, at::kFloat));

  at::Tensor neg, neg_pooled;
  if (sd::needs_unconditional(*guider)) {
    // FluxPipeline runs true CFG only with a negative prompt (do_true_cfg = scale > 1 and has_neg_prompt); without
    // one it would silently drop the guidance. Say so instead.
    std::vector<std::string> negs = sd::prompt_list(s, sd::negative_prompt.name);
    if (negs.empty())
      throw InputError("guider " + guider->type() + " (scale " + std::to_string(guider->guidance_scale()) +
                           ") needs an unconditional pass, but no negative_prompt is given",
                       {}, s.block_path(),
                       "FLUX's true CFG needs --set negative_prompt=…; or leave true_cfg_scale at 1");
    const int64_t b = embeds.size(0);
    negs = matched(negs, b, "negative_prompt", s.block_path());
    auto negs_2 = matched(or_fallback(sd::prompt_list(s, flux::negative_prompt_2.name), negs), b,
                          "negative_prompt_2", s.block_path());
    Encoded e = encode(c, negs, negs_2, embeds.size(1));
    neg = e.embeds;
    neg_pooled = e.pooled;
  }
  s.set(sd::negative_prompt_embeds.name, neg.defined() ? Value(neg) : Value());
  s.set(sd::negative_pooled_prompt_embeds.name, neg_pooled.defined() ? Value(neg_pooled) : Value());
}

// ---------------------------------------------------------------- flux.vae_encode

BlockSpec FluxVaeEncodeStep::spec() const {
  InputParam image = sd::image;
  image.required = true;
  return BlockSpec(kId, kDescription)
      .component(sd::vae_component())
      .config(sd::vae_tiling)
      .input(image)
      .input(flux::height)
      .input(flux::width)
      .input(sd::seed)
      .input(sd::generator)
      .output(flux::image_latents_out)
      .output(sd::height_out)
      .output(sd::width_out)
      .output(sd::generator_out);
}

void FluxVaeEncodeStep::run(Components& c, BlockState& s) const {
  c10::InferenceMode guard;
  auto vae = c.get_as<AutoencoderKLImpl>("vae");
  sd::apply_vae_tiling(c, *vae);
  const int64_t f = sd::vae_scale_factor(*vae);
  // FluxImg2ImgPipeline: height = height or default_sample_size (128) * vae_scale_factor; the image is resized.
  const int64_t h = s.has(flux::height.name) ? s.get_int(flux::height.name) : 128 * f;
  const int64_t w = s.has(flux::width.name) ? s.get_int(flux::width.name) : 128 * f;
  flux::latent_size(h, w, f, s.block_path());
  const at::Tensor& pixels = s.get(sd::image.name).images(sd::image.name).pixels;  // [B, 3, H, W] in [0, 1]
  at::Tensor image = preprocess_image(pixels, h, w, "lanczos", 2 * f);              // [B, 3, h, w] in [-1, 1]
  at::Generator gen = sd::run_generator(s);
  s.set(flux::image_latents_out.name, flow::encode_image(*vae, image, gen));
  s.set(sd::height_out.name, Value(h));
  s.set(sd::width_out.name, Value(w));
}

}  // namespace tessera
