#include "blocks/sd/encoders.h"

#include <spdlog/spdlog.h>

#include "blocks/common/image_processor.h"
#include "blocks/sd/sd_common.h"
#include "blocks/sd/sd_params.h"
#include "tessera/components.h"
#include "guiders/guider.h"
#include "models/text/clip_text_model.h"
#include "models/text/clip_tokenizer.h"
#include "models/vae/autoencoder_kl.h"

namespace tessera {

namespace {

/// Tokenizes `prompts` to the tokenizer's max length, warning (as diffusers) when a prompt is truncated.
at::Tensor tokenize(const CLIPTokenizer& tok, const std::vector<std::string>& prompts, const std::string& path) {
  for (const auto& p : prompts)
    if (tok.untruncated_length(p) > static_cast<size_t>(tok.model_max_length()))
      spdlog::warn("{}: the prompt is longer than {} tokens and was truncated: \"{}\"", path, tok.model_max_length(),
                   p.size() > 60 ? p.substr(0, 60) + "…" : p);
  return tok(prompts).input_ids;  // [N, 77]
}

}  // namespace

// ---------------------------------------------------------------- sd.text_encoder

BlockSpec SDTextEncoderStep::spec() const {
  return BlockSpec(kId, kDescription)
      .component(sd::tokenizer_component())
      .component(sd::text_encoder_component())
      .component(sd::guider_component())
      .input(sd::prompt)
      .input(sd::negative_prompt)
      .input(sd::prompt_embeds_in)
      .input(sd::negative_prompt_embeds_in)
      .input(sd::clip_skip)
      .input(sd::guidance_scale)
      .output(sd::prompt_embeds)
      .output(sd::negative_prompt_embeds);
}

void SDTextEncoderStep::run(Components& c, BlockState& s) const {
  c10::InferenceMode guard;
  auto guider = c.get_as<Guider>("guider");
  sd::apply_guidance_scale(*guider, s);
  const bool need_negative = sd::needs_unconditional(*guider);

  at::Tensor embeds;
  std::vector<std::string> prompts;
  if (s.has(sd::prompt_embeds_in.name)) {
    embeds = s.tensor(sd::prompt_embeds_in.name);
    if (embeds.dim() != 3)
      throw InputError("prompt_embeds must be [B, seq, dim], got " + s.get(sd::prompt_embeds_in.name).repr(), {},
                       s.block_path());
  } else {
    prompts = sd::prompt_list(s, sd::prompt.name);
    if (prompts.empty())
      throw InputError("give a prompt (or prompt_embeds)", {}, s.block_path(), "--set prompt=\"a photo of a cat\"");
    auto tok = c.get_as<CLIPTokenizer>("tokenizer");
    auto te = c.get_as<CLIPTextModelImpl>("text_encoder");
    at::Tensor ids = tokenize(*tok, prompts, s.block_path());
    if (s.has(sd::clip_skip.name)) {
      const int64_t skip = s.get_int(sd::clip_skip.name);
      const int64_t layers = te->text_model->config.num_hidden_layers();
      if (skip < 0 || skip > layers)  // hidden_states has layers + 1 entries (the embeddings first)
        throw InputError("clip_skip must be in [0, " + std::to_string(layers) + "] for this text encoder, got " +
                             std::to_string(skip),
                         {}, s.block_path());
      CLIPTextModelOutput out = te->forward(ids, {}, /*output_hidden_states=*/true);
      // hidden_states[-(clip_skip + 1)], then the final layer norm, as diffusers does.
      const auto& hs = out.hidden_states;
      embeds = te->text_model->final_layer_norm(hs[hs.size() - 1 - static_cast<size_t>(skip)]);
    } else {
      embeds = te->forward(ids).last_hidden_state;  // [B, 77, D]
    }
  }
  embeds = embeds.to(at::kFloat);
  s.set(sd::prompt_embeds.name, embeds);

  if (!need_negative) {
    s.set(sd::negative_prompt_embeds.name, Value());
    return;
  }
  at::Tensor neg;
  if (s.has(sd::negative_prompt_embeds_in.name)) {
    neg = s.tensor(sd::negative_prompt_embeds_in.name);
    if (neg.sizes() != embeds.sizes())
      throw InputError("negative_prompt_embeds " + s.get(sd::negative_prompt_embeds_in.name).repr() +
                           " must have the shape of prompt_embeds " + Value(embeds).repr(),
                       {}, s.block_path());
  } else {
    const int64_t b = embeds.size(0);
    std::vector<std::string> negs = sd::prompt_list(s, sd::negative_prompt.name, {""});
    if (negs.size() == 1 && b > 1) negs.assign(static_cast<size_t>(b), negs[0]);
    if (static_cast<int64_t>(negs.size()) != b)
      throw InputError("negative_prompt has " + std::to_string(negs.size()) + " entries but there are " +
                           std::to_string(b) + " prompts",
                       {}, s.block_path(), "give one negative prompt, or one per prompt");
    auto tok = c.get_as<CLIPTokenizer>("tokenizer");
    auto te = c.get_as<CLIPTextModelImpl>("text_encoder");
    at::Tensor ids = tok->operator()(negs, embeds.size(1)).input_ids;
    neg = te->forward(ids).last_hidden_state;  // no clip_skip for the negatives, as diffusers' SD pipeline
  }
  s.set(sd::negative_prompt_embeds.name, neg.to(at::kFloat));
}

// ---------------------------------------------------------------- sd.input

BlockSpec SDInputStep::spec() const {
  InputParam pe{"prompt_embeds", Kind::Tensor, "Text embeddings [B, seq, D]", true};
  return BlockSpec(kId, kDescription)
      .input(sd::num_images_per_prompt)
      .input(pe)
      .input(sd::negative_prompt_embeds_in)
      .input(sd::pooled_prompt_embeds_in)
      .input(sd::negative_pooled_prompt_embeds_in)
      .output(sd::batch_size_out)
      .output(sd::prompt_embeds)
      .output(sd::negative_prompt_embeds)
      .output(sd::pooled_prompt_embeds)
      .output(sd::negative_pooled_prompt_embeds);
}

void SDInputStep::run(Components&, BlockState& s) const {
  const at::Tensor& pe = s.tensor("prompt_embeds");
  if (pe.dim() != 3) throw InputError("prompt_embeds must be [B, seq, D], got " + Value(pe).repr(), {}, s.block_path());
  const int64_t b = pe.size(0), n = s.get_int(sd::num_images_per_prompt.name);
  if (n <= 0 || n > 4096)
    throw InputError("num_images_per_prompt must be in [1, 4096], got " + std::to_string(n), {}, s.block_path());
  auto expand = [&](const std::string& in, const std::string& out, int64_t dims) {
    if (!s.has(in)) {
      s.set(out, Value());
      return;
    }
    const at::Tensor& x = s.tensor(in);
    if (x.dim() != dims || x.size(0) != b)
      throw InputError("'" + in + "' " + Value(x).repr() + " does not match prompt_embeds " + Value(pe).repr() +
                           " (expected " + std::to_string(dims) + " dims with batch " + std::to_string(b) + ")",
                       {}, s.block_path());
    s.set(out, sd::repeat_rows(x, n));
  };
  s.set(sd::batch_size_out.name, Value(b));
  s.set(sd::prompt_embeds.name, sd::repeat_rows(pe, n));
  expand("negative_prompt_embeds", sd::negative_prompt_embeds.name, 3);
  expand("pooled_prompt_embeds", sd::pooled_prompt_embeds.name, 2);
  expand("negative_pooled_prompt_embeds", sd::negative_pooled_prompt_embeds.name, 2);
}

// ---------------------------------------------------------------- sd.vae_encode

BlockSpec SDVaeEncodeStep::spec() const {
  InputParam image = sd::image;
  image.required = true;
  return BlockSpec(kId, kDescription)
      .component(sd::vae_component())
      .config(sd::vae_tiling)
      .input(image)
      .input(sd::height)
      .input(sd::width)
      .input(sd::seed)
      .input(sd::generator)
      .output(sd::image_latents_out)
      .output(sd::height_out)
      .output(sd::width_out)
      .output(sd::generator_out);
}

void SDVaeEncodeStep::run(Components& c, BlockState& s) const {
  c10::InferenceMode guard;
  auto vae = c.get_as<AutoencoderKLImpl>("vae");
  sd::apply_vae_tiling(c, *vae);
  const int64_t f = sd::vae_scale_factor(*vae);
  const at::Tensor& pixels = s.get(sd::image.name).images(sd::image.name).pixels;  // [B, 3, H, W] in [0, 1]
  auto [h, w] = default_height_width(pixels, s.has(sd::height.name) ? std::optional<int64_t>(s.get_int("height"))
                                                                     : std::nullopt,
                                     s.has(sd::width.name) ? std::optional<int64_t>(s.get_int("width")) : std::nullopt,
                                     f);
  sd::check_image_size(h, w, f, s.block_path());
  at::Tensor image = preprocess_image(pixels, h, w, "lanczos", f);  // [B, 3, h, w] in [-1, 1]
  at::Generator gen = sd::run_generator(s);
  s.set(sd::image_latents_out.name, sd::encode_image(*vae, image, gen));
  s.set(sd::height_out.name, Value(h));
  s.set(sd::width_out.name, Value(w));
}

}  // namespace tessera
