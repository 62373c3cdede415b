// The CLIP tokenizer and text-encoder cases of the parity runner (see the parity README).
#include "tools/parity/text_cases.h"

#include <filesystem>
#include <map>

#include <torch/torch.h>

#include "tessera/error.h"
#include "models/loading/diffusers_folder.h"
#include "models/text/clip_text_model.h"
#include "models/text/clip_tokenizer.h"
#include "tools/parity/component_cases.h"

namespace tessera {

namespace {

namespace fs = std::filesystem;

at::Tensor need(const ParityCase& c, const std::string& name) { return required_parity_tensor(c, name); }

std::string model_folder(const ParityCase& c) { return parity_model_folder(c); }

/// "input_ids_2" with stem "input_ids" → "_2"; std::nullopt when `name` is not stem[_K].
std::optional<std::string> suffix_of(const std::string& name, const std::string& stem) {
  if (name.rfind(stem, 0) != 0) return std::nullopt;
  std::string rest = name.substr(stem.size());
  if (!rest.empty() && rest[0] != '_') return std::nullopt;
  return rest;
}

}  // namespace

ParityResult run_tokenizer_case(const ParityCase& c) {
  const std::string folder = model_folder(c);
  if (!c.params.contains("prompts") || !c.params["prompts"].is_array())
    throw ValidationError("params.prompts is missing or not a list");
  const auto prompts = c.params["prompts"].get<std::vector<std::string>>();
  const int64_t max_length = c.params.value("max_length", int64_t(-1));
  ParityComparison cmp(c.tolerance);
  std::map<std::string, CLIPTokenizerOutput> outputs;  // suffix → output
  for (auto it = c.expected.begin(); it != c.expected.end(); ++it) {
    auto suffix = suffix_of(it.key(), "input_ids");
    if (!suffix) suffix = suffix_of(it.key(), "attention_mask");
    if (!suffix) {
      cmp.fail("expected tensor '" + it.key() + "' is not input_ids[_K] or attention_mask[_K]");
      continue;
    }
    if (!outputs.count(*suffix)) {
      const std::string sub =
          suffix->empty() ? c.params.value("subfolder", std::string("tokenizer")) : "tokenizer" + *suffix;
      auto tok = CLIPTokenizer::from_pretrained(component_dir(folder, sub));
      outputs[*suffix] = (*tok)(prompts, max_length);
      if (suffix->empty() && c.params.contains("untruncated_lengths")) {
        const auto lengths = c.params["untruncated_lengths"].get<std::vector<int64_t>>();
        for (size_t i = 0; i < lengths.size() && i < prompts.size(); ++i)
          cmp.compare_scalar("untruncated_lengths[" + std::to_string(i) + "]",
                             static_cast<double>(tok->untruncated_length(prompts[i])),
                             static_cast<double>(lengths[i]));
      }
    }
    const CLIPTokenizerOutput& out = outputs[*suffix];
    cmp.compare(it.key(), it.key().rfind("input_ids", 0) == 0 ? out.input_ids : out.attention_mask,
                need(c, it.key()));
  }
  return cmp.result();
}

ParityResult run_text_encoder_case(const ParityCase& c) {
  c10::InferenceMode guard;
  const std::string folder = model_folder(c);
  if (c.params.value("attention_mask_passed", false))
    throw ValidationError("cases with attention_mask_passed are not supported by the runner");
  ParityComparison cmp(c.tolerance);
  std::map<std::string, CLIPTextModelOutput> outputs;  // prefix → output
  auto run = [&](const std::string& prefix) -> const CLIPTextModelOutput& {
    auto it = outputs.find(prefix);
    if (it != outputs.end()) return it->second;
    std::string sub = c.params.value("subfolder", std::string("text_encoder")), ids_name = "input_ids";
    if (prefix == "te1_") sub = "text_encoder";
    if (prefix == "te2_") {
      sub = "text_encoder_2";
      ids_name = "input_ids_2";
    }
    const nlohmann::json config = read_component_config(folder, sub);
    std::string cls = "CLIPTextModel";
    if (config.contains("architectures") && config["architectures"].is_array() && !config["architectures"].empty() &&
        config["architectures"][0].is_string())
      cls = config["architectures"][0].get<std::string>();
    const at::Tensor ids = need(c, ids_name);
    CLIPTextModelOutput out;
    if (cls == "CLIPTextModelWithProjection") out = load_clip_text_model_with_projection(folder, sub)->forward(ids, {}, true);
    else if (cls == "CLIPTextModel") out = load_clip_text_model(folder, sub)->forward(ids, {}, true);
    else throw ValidationError(folder + "/" + sub + "/config.json: architectures names " + cls + ", not a CLIP text model");
    return outputs.emplace(prefix, std::move(out)).first->second;
  };
  for (auto it = c.expected.begin(); it != c.expected.end(); ++it) {
    std::string name = it.key(), prefix;
    if (name.rfind("te1_", 0) == 0 || name.rfind("te2_", 0) == 0) {
      prefix = name.substr(0, 4);
      name = name.substr(4);
    }
    const CLIPTextModelOutput& out = run(prefix);
    at::Tensor got;
    if (name == "last_hidden_state") got = out.last_hidden_state;
    else if (name == "pooler_output") got = out.pooler_output;
    else if (name == "text_embeds") got = out.text_embeds;
    else if (name == "hidden_states_penultimate" && out.hidden_states.size() >= 2) got = out.hidden_states.end()[-2];
    else if (name == "hidden_states_embeddings" && !out.hidden_states.empty()) got = out.hidden_states.front();
    if (!got.defined()) {
      cmp.fail("expected tensor '" + it.key() + "' has no counterpart in the CLIP text model outputs");
      continue;
    }
    cmp.compare(it.key(), got, need(c, it.key()));
  }
  return cmp.result();
}

void register_text_case_runners() {
  register_case_runner("tokenizer", run_tokenizer_case);
  register_component_case_runner("CLIPTextModel", run_text_encoder_case);
  register_component_case_runner("CLIPTextModelWithProjection", run_text_encoder_case);
  // tiny_sdxl_text_encoders' api is "transformers.CLIPTextModel / CLIPTextModelWithProjection forward(…)", which
  // component_case_class reads as this whole phrase.
  register_component_case_runner("CLIPTextModel / CLIPTextModelWithProjection forward", run_text_encoder_case);
}

}  // namespace tessera
