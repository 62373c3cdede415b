#include "blocks/sd3/encoders.h"

#include <spdlog/spdlog.h>

#include "blocks/common/flow_match.h"
#include "blocks/common/image_processor.h"
#include "blocks/sd/sd_common.h"
#include "blocks/sd/sd_params.h"
#include "blocks/sd3/sd3_common.h"
#include "blocks/sd3/sd3_params.h"
#include "tessera/components.h"
#include "guiders/guider.h"
#include "models/text/clip_text_model.h"
#include "models/text/clip_tokenizer.h"
#include "models/text/t5_encoder.h"
#include "models/text/t5_tokenizer.h"
#include "models/transformers/transformer_sd3.h"
#include "models/vae/autoencoder_kl.h"

namespace tessera {

namespace {

/// Python's `x or fallback` for prompt lists: absent, an empty list or a single "" falls back.
std::vector<std::string> or_fallback(std::vector<std::string> v, const std::vector<std::string>& fallback) {
  const bool empty = v.empty() || (v.size() == 1 && v[0].empty());
  return empty ? fallback : v;
}

/// One prompt broadcast to the batch; otherwise one per prompt (InputError naming `what`).
std::vector<std::string> matched(std::vector<std::string> v, int64_t b, const std::string& what,
                                 const std::string& path) {
  if (v.size() == 1 && b > 1) v.assign(static_cast<size_t>(b), v[0]);
  if (static_cast<int64_t>(v.size()) != b)
    throw InputError(what + " has " + std::to_string(v.size()) + " entries but there are " + std::to_string(b) +
                         " prompts",
                     {}, path, "give one, or one per prompt");
  return v;
}

std::string shorten(const std::string& p) { return p.size() > 60 ? p.substr(0, 60) + "…" : p; }

/// The joint embeddings of one set of prompts.
struct Joint {
  at::Tensor embeds;  ///< [B, 77 + msl, T5 width]
  at::Tensor pooled;  ///< [B, P_L + P_G]
};

/// _get_clip_prompt_embeds: hidden_states[-(skip + 2)] [B, 77, D] and text_embeds [B, P].
std::pair<at::Tensor, at::Tensor> clip_embeds(Components& c, const std::string& tok_name, const std::string& te_name,
                                              const std::vector<std::string>& prompts, int64_t skip,
                                              const std::string& path) {
  auto tok = c.get_as<CLIPTokenizer>(tok_name);
  auto te = c.get_as<CLIPTextModelWithProjectionImpl>(te_name);
  const int64_t layers = te->text_model->config.num_hidden_layers();
  if (skip + 1 > layers)  // hidden_states[-(clip_skip + 2)] of layers + 1 entries
    throw InputError("clip_skip must be in [0, " + std::to_string(layers - 1) + "] for " + te_name + " (" +
                         std::to_string(layers) + " layers), got " + std::to_string(skip),
                     {}, path);
  for (const auto& p : prompts)
    if (tok->untruncated_length(p) > static_cast<size_t>(tok->model_max_length()))
      spdlog::warn("{}: the prompt is longer than CLIP's {} tokens and was truncated for {}: \"{}\"", path,
                   tok->model_max_length(), te_name, shorten(p));
  at::Tensor ids = (*tok)(prompts).input_ids;  // [B, 77]
  CLIPTextModelOutput out = te->forward(ids, {}, /*output_hidden_states=*/true);
  const auto& hs = out.hidden_states;
  return {hs[hs.size() - 2 - static_cast<size_t>(skip)].to(at::kFloat), out.text_embeds.to(at::kFloat)};
}

/// _get_t5_prompt_embeds: last_hidden_state [B, msl, D_T5], no attention mask.
at::Tensor t5_embeds(Components& c, const std::vector<std::string>& prompts, int64_t msl, const std::string& path) {
  auto tok = c.get_as<T5Tokenizer>("tokenizer_3");
  if (tok->model_max_length() && msl > *tok->model_max_length())
    throw InputError("max_sequence_length " + std::to_string(msl) + " is above the T5 tokenizer's model_max_length " +
                         std::to_string(*tok->model_max_length()),
                     {}, path, "--set max_sequence_length=" + std::to_string(*tok->model_max_length()));
  T5TokenizerOutput t = (*tok)(prompts, msl);  // [B, msl], `</s>` last, padded
  for (size_t k = 0; k < prompts.size(); ++k)
    if (t.untruncated_lengths[k] > msl)
      spdlog::warn("{}: the prompt is longer than max_sequence_length {} and was truncated for the T5 encoder: \"{}\"",
                   path, msl, shorten(prompts[k]));
  auto te = c.get_as<T5EncoderModelImpl>("text_encoder_3");
  te->check_input_ids(t.input_ids);
  return te->forward(t.input_ids).last_hidden_state.to(at::kFloat);  // [B, msl, D_T5]
}

/// encode_prompt for one set of prompts (already matched to the batch).
Joint encode(Components& c, const std::vector<std::string>& p1, const std::vector<std::string>& p2,
             const std::vector<std::string>& p3, int64_t skip, int64_t msl, const std::string& path) {
  auto [l, pooled_l] = clip_embeds(c, "tokenizer", "text_encoder", p1, skip, path);
  auto [g, pooled_g] = clip_embeds(c, "tokenizer_2", "text_encoder_2", p2, skip, path);
  at::Tensor clip = at::cat({l, g}, -1);  // [B, 77, D_L + D_G]
  at::Tensor t5 = t5_embeds(c, p3, msl, path);
  const int64_t width = t5.size(-1), clip_width = clip.size(-1);
  // F.pad(clip, (0, width - clip_width)): zeros on the right, or (a negative amount) the first `width` features.
  clip = clip_width > width ? clip.slice(-1, 0, width) : at::constant_pad_nd(clip, {0, width - clip_width}, 0.0);
  return {at::cat({clip, t5}, -2), at::cat({pooled_l, pooled_g}, -1)};  // [B, 77 + msl, width], [B, P_L + P_G]
}

/// A caller's embeddings pair: prompt_embeds [B, S, D] with pooled [B, P] of the same batch.
Joint given_embeds(const BlockState& s, const std::string& embeds_name, const std::string& pooled_name) {
  const at::Tensor& e = s.tensor(embeds_name);
  if (e.dim() != 3)
    throw InputError(embeds_name + " must be [B, seq, dim], got " + s.get(embeds_name).repr(), {}, s.block_path());
  if (!s.has(pooled_name))
    throw InputError(embeds_name + " is given without " + pooled_name, {}, s.block_path(),
                     "give both, made by the same text encoders (as diffusers requires)");
  const at::Tensor& p = s.tensor(pooled_name);
  if (p.dim() != 2 || p.size(0) != e.size(0))
    throw InputError(pooled_name + " " + s.get(pooled_name).repr() + " must be [B, dim] with the batch of " +
                         embeds_name + " " + s.get(embeds_name).repr(),
                     {}, s.block_path());
  return {e.to(at::kFloat), p.to(at::kFloat)};
}

}  // namespace

// ---------------------------------------------------------------- sd3.text_encoder

BlockSpec SD3TextEncoderStep::spec() const {
  return BlockSpec(kId, kDescription)
      .component(sd::tokenizer_component("tokenizer"))
      .component(sd::tokenizer_component("tokenizer_2"))
      .component(sd3::tokenizer_3_component())
      .component(sd::text_encoder_component("text_encoder", "CLIPTextModelWithProjection"))
      .component(sd::text_encoder_component("text_encoder_2", "CLIPTextModelWithProjection"))
      .component(sd3::text_encoder_3_component())
      .component(sd3::guider_component())
      .input(sd::prompt)
      .input(sd3::prompt_2)
      .input(sd3::prompt_3)
      .input(sd::negative_prompt)
      .input(sd3::negative_prompt_2)
      .input(sd3::negative_prompt_3)
      .input(sd::prompt_embeds_in)
      .input(sd::negative_prompt_embeds_in)
      .input(sd3::pooled_prompt_embeds_in)
      .input(sd3::negative_pooled_prompt_embeds_in)
      .input(sd::clip_skip)
      .input(sd3::max_sequence_length)
      .input(sd::guidance_scale)
      .output(sd3::prompt_embeds)
      .output(sd3::negative_prompt_embeds)
      .output(sd3::pooled_prompt_embeds)
      .output(sd3::negative_pooled_prompt_embeds);
}

void SD3TextEncoderStep::run(Components& c, BlockState& s) const {
  c10::InferenceMode guard;
  const std::string& path = s.block_path();
  const int64_t msl = s.get_int(sd3::max_sequence_length.name);
  if (msl <= 0 || msl > sd3::kMaxSequenceLimit)
    throw InputError("max_sequence_length must be in [1, " + std::to_string(sd3::kMaxSequenceLimit) +
                         "] (StableDiffusion3Pipeline's limit), got " + std::to_string(msl),
                     {}, path, "--set max_sequence_length=256");
  int64_t skip = 0;
  if (s.has(sd::clip_skip.name)) {
    skip = s.get_int(sd::clip_skip.name);
    if (skip < 0) throw InputError("clip_skip must be >= 0, got " + std::to_string(skip), {}, path);
  }
  auto guider = c.get_as<Guider>("guider");
  sd::apply_guidance_scale(*guider, s);

  Joint pos;
  std::vector<std::string> prompts;
  if (s.has(sd::prompt_embeds_in.name)) {
    pos = given_embeds(s, sd::prompt_embeds_in.name, sd3::pooled_prompt_embeds_in.name);
  } else {
    prompts = sd::prompt_list(s, sd::prompt.name);
    if (prompts.empty()) throw InputError("give a prompt (or prompt_embeds)", {}, path, "--set prompt=\"a cat\"");
    const auto b = static_cast<int64_t>(prompts.size());
    auto p2 = matched(or_fallback(sd::prompt_list(s, sd3::prompt_2.name), prompts), b, "prompt_2", path);
    auto p3 = matched(or_fallback(sd::prompt_list(s, sd3::prompt_3.name), prompts), b, "prompt_3", path);
    pos = encode(c, prompts, p2, p3, skip, msl, path);
  }
  s.set(sd3::prompt_embeds.name, pos.embeds);
  s.set(sd3::pooled_prompt_embeds.name, pos.pooled);

  if (!sd::needs_unconditional(*guider)) {
    s.set(sd3::negative_prompt_embeds.name, Value());
    s.set(sd3::negative_pooled_prompt_embeds.name, Value());
    return;
  }
  Joint neg;
  if (s.has(sd::negative_prompt_embeds_in.name)) {
    neg = given_embeds(s, sd::negative_prompt_embeds_in.name, sd3::negative_pooled_prompt_embeds_in.name);
  } else {
    const int64_t b = pos.embeds.size(0);
    // negative_prompt or ""; the second and third default to the first; no clip_skip (as diffusers).
    auto n1 = matched(or_fallback(sd::prompt_list(s, sd::negative_prompt.name), {""}), b, "negative_prompt", path);
    auto n2 = matched(or_fallback(sd::prompt_list(s, sd3::negative_prompt_2.name), n1), b, "negative_prompt_2", path);
    auto n3 = matched(or_fallback(sd::prompt_list(s, sd3::negative_prompt_3.name), n1), b, "negative_prompt_3", path);
    neg = encode(c, n1, n2, n3, 0, msl, path);
  }
  if (neg.embeds.sizes() != pos.embeds.sizes() || neg.pooled.sizes() != pos.pooled.sizes())
    throw InputError("the negative embeddings " + Value(neg.embeds).repr() + " / " + Value(neg.pooled).repr() +
                         " do not have the shapes of the prompt's " + Value(pos.embeds).repr() + " / " +
                         Value(pos.pooled).repr(),
                     {}, path, "make both with the same max_sequence_length and text encoders");
  s.set(sd3::negative_prompt_embeds.name, neg.embeds);
  s.set(sd3::negative_pooled_prompt_embeds.name, neg.pooled);
}

// ---------------------------------------------------------------- sd3.vae_encode

BlockSpec SD3VaeEncodeStep::spec() const {
  InputParam image = sd::image;
  image.required = true;
  return BlockSpec(kId, kDescription)
      .component(sd3::transformer_component())
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

void SD3VaeEncodeStep::run(Components& c, BlockState& s) const {
  c10::InferenceMode guard;
  auto transformer = c.get_as<SD3Transformer2DModelImpl>("transformer");
  auto vae = c.get_as<AutoencoderKLImpl>("vae");
  sd::apply_vae_tiling(c, *vae);
  const int64_t f = sd::vae_scale_factor(*vae);
  auto [h, w] = sd3::image_size(s, *transformer, f);
  const at::Tensor& pixels = s.get(sd::image.name).images(sd::image.name).pixels;  // [b, 3, H, W] in [0, 1]
  at::Tensor image = preprocess_image(pixels, h, w, "lanczos", f);                  // [b, 3, h, w] in [-1, 1]
  at::Generator gen = sd::run_generator(s);
  s.set(sd::image_latents_out.name, flow::encode_image(*vae, image, gen));  // [b, C, h/f, w/f]
  s.set(sd::height_out.name, Value(h));
  s.set(sd::width_out.name, Value(w));
}

}  // namespace tessera
