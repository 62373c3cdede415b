#include "blocks/sdxl/encoders.h"

#include "blocks/sd/sd_common.h"
#include "blocks/sd/sd_params.h"
#include "tessera/components.h"
#include "guiders/guider.h"
#include "models/text/clip_text_model.h"
#include "models/text/clip_tokenizer.h"

namespace tessera {

namespace {

const InputParam prompt_2{"prompt_2", Kind::StringList, "Prompt for tokenizer_2 / text_encoder_2 (default: prompt)"};
const InputParam negative_prompt_2{"negative_prompt_2", Kind::StringList,
                                   "Negative prompt for the second encoder (default: negative_prompt)"};
const ConfigSpec kForceZeros{"force_zeros_for_empty_prompt", Value(true),
                             "Without a negative prompt, the negative embeddings are zeros (SDXL base)"};

/// One encoder's contribution: penultimate-or-clip_skip hidden states [B, S, D] and, for the projection model,
/// the pooled text_embeds [B, P].
struct Encoded {
  at::Tensor states, pooled;
};

template <typename Model>
Encoded encode(const CLIPTokenizer& tok, Model& te, const std::vector<std::string>& prompts, int64_t max_length,
               int64_t skip) {
  at::Tensor ids = tok(prompts, max_length).input_ids;  // [B, S]
  CLIPTextModelOutput out = te.forward(ids, {}, /*output_hidden_states=*/true);
  const auto& hs = out.hidden_states;
  return {hs[hs.size() - 2 - static_cast<size_t>(skip)], out.text_embeds};  // hidden_states[-(skip + 2)]
}

/// Python's `x or fallback` for prompt lists: an absent, empty list or a single "" falls back.
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
                     {}, path);
  return v;
}

}  // namespace

BlockSpec SDXLTextEncoderStep::spec() const {
  return BlockSpec(kId, kDescription)
      .component(sd::tokenizer_component("tokenizer"))
      .component(sd::tokenizer_component("tokenizer_2"))
      .component(sd::text_encoder_component("text_encoder"))
      .component(sd::text_encoder_component("text_encoder_2", "CLIPTextModelWithProjection"))
      .component(sd::guider_component())
      .config(kForceZeros)
      .input(sd::prompt)
      .input(prompt_2)
      .input(sd::negative_prompt)
      .input(negative_prompt_2)
      .input(sd::clip_skip)
      .input(sd::guidance_scale)
      .output(sd::prompt_embeds)
      .output(sd::negative_prompt_embeds)
      .output(sd::pooled_prompt_embeds)
      .output(sd::negative_pooled_prompt_embeds);
}

void SDXLTextEncoderStep::run(Components& c, BlockState& s) const {
  c10::InferenceMode guard;
  auto guider = c.get_as<Guider>("guider");
  sd::apply_guidance_scale(*guider, s);
  std::vector<std::string> prompts = sd::prompt_list(s, sd::prompt.name);
  if (prompts.empty()) throw InputError("give a prompt", {}, s.block_path(), "--set prompt=\"a photo of a cat\"");
  const int64_t b = static_cast<int64_t>(prompts.size());
  std::vector<std::string> prompts_2 =
      matched(or_fallback(sd::prompt_list(s, prompt_2.name), prompts), b, "prompt_2", s.block_path());
  auto tok = c.get_as<CLIPTokenizer>("tokenizer");
  auto tok_2 = c.get_as<CLIPTokenizer>("tokenizer_2");
  auto te = c.get_as<CLIPTextModelImpl>("text_encoder");
  auto te_2 = c.get_as<CLIPTextModelWithProjectionImpl>("text_encoder_2");

  int64_t skip = 0;
  if (s.has(sd::clip_skip.name)) {
    skip = s.get_int(sd::clip_skip.name);
    const int64_t layers = std::min(te->text_model->config.num_hidden_layers(),
                                    te_2->text_model->config.num_hidden_layers());
    if (skip < 0 || skip + 1 > layers)  // hidden_states[-(clip_skip + 2)] of layers + 1 entries
      throw InputError("clip_skip must be in [0, " + std::to_string(layers - 1) + "] for these text encoders, got " +
                           std::to_string(skip),
                       {}, s.block_path());
  }
  Encoded e1 = encode(*tok, *te, prompts, -1, skip);
  Encoded e2 = encode(*tok_2, *te_2, prompts_2, -1, skip);
  at::Tensor embeds = at::cat({e1.states, e2.states}, -1).to(at::kFloat);  // [B, 77, D1 + D2]
  at::Tensor pooled = e2.pooled.to(at::kFloat);                             // [B, P]
  s.set(sd::prompt_embeds.name, embeds);
  s.set(sd::pooled_prompt_embeds.name, pooled);

  if (!sd::needs_unconditional(*guider)) {
    s.set(sd::negative_prompt_embeds.name, Value());
    s.set(sd::negative_pooled_prompt_embeds.name, Value());
    return;
  }
  if (!s.has(sd::negative_prompt.name) && c.config(kForceZeros.name).to_bool(kForceZeros.name)) {
    s.set(sd::negative_prompt_embeds.name, at::zeros_like(embeds));
    s.set(sd::negative_pooled_prompt_embeds.name, at::zeros_like(pooled));
    return;
  }
  std::vector<std::string> negs = matched(or_fallback(sd::prompt_list(s, sd::negative_prompt.name), {""}), b,
                                          "negative_prompt", s.block_path());
  std::vector<std::string> negs_2 =
      matched(or_fallback(sd::prompt_list(s, negative_prompt_2.name), negs), b, "negative_prompt_2", s.block_path());
  Encoded n1 = encode(*tok, *te, negs, embeds.size(1), 0);  // penultimate states, no clip_skip (as diffusers)
  Encoded n2 = encode(*tok_2, *te_2, negs_2, embeds.size(1), 0);
  s.set(sd::negative_prompt_embeds.name, at::cat({n1.states, n2.states}, -1).to(at::kFloat));
  s.set(sd::negative_pooled_prompt_embeds.name, n2.pooled.to(at::kFloat));
}

}  // namespace tessera
