// The T5 tokenizer and T5 encoder cases of the parity runner (tests/fixtures/parity/README_dit.md).
#include "tools/parity/t5_cases.h"

#include <filesystem>
#include <map>

#include <torch/torch.h>

#include "tessera/error.h"
#include "models/loading/diffusers_folder.h"
#include "models/text/t5_encoder.h"
#include "models/text/t5_tokenizer.h"
#include "tools/parity/component_cases.h"
#include "tools/parity/text_cases.h"

namespace tessera {

namespace {

namespace fs = std::filesystem;

constexpr const char* kT5TokenizerApi = "transformers.T5Tokenizer";

std::vector<int64_t> max_lengths_of(const ParityCase& c) {
  if (c.params.contains("max_lengths") && c.params["max_lengths"].is_array())
    return c.params["max_lengths"].get<std::vector<int64_t>>();
  if (c.params.contains("max_length") && c.params["max_length"].is_number_integer())
    return {c.params["max_length"].get<int64_t>()};
  throw ValidationError("params.max_lengths (or max_length) is missing");
}

/// "input_ids_48" → 48 for stem "input_ids"; std::nullopt when `name` is not stem_<int>.
std::optional<int64_t> length_suffix(const std::string& name, const std::string& stem) {
  if (name.rfind(stem + "_", 0) != 0) return std::nullopt;
  const std::string rest = name.substr(stem.size() + 1);
  if (rest.empty() || rest.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  return std::stoll(rest);
}

ParityResult run_tokenizer_kind(const ParityCase& c) {
  if (c.api.rfind(kT5TokenizerApi, 0) == 0) return run_t5_tokenizer_case(c);
  return run_tokenizer_case(c);
}

}  // namespace

ParityResult run_t5_tokenizer_case(const ParityCase& c) {
  const std::string folder = parity_model_folder(c);
  const std::string sub = c.params.value("subfolder", std::string("tokenizer_2"));
  if (!c.params.contains("prompts") || !c.params["prompts"].is_array())
    throw ValidationError("params.prompts is missing or not a list");
  const auto prompts = c.params["prompts"].get<std::vector<std::string>>();
  const std::vector<int64_t> lengths = max_lengths_of(c);
  auto tok = T5Tokenizer::from_pretrained(component_dir(folder, sub));
  ParityComparison cmp(c.tolerance);

  std::map<int64_t, T5TokenizerOutput> outputs;  // max_length → output
  for (int64_t len : lengths) outputs[len] = (*tok)(prompts, len);
  for (auto it = c.expected.begin(); it != c.expected.end(); ++it) {
    auto len = length_suffix(it.key(), "input_ids");
    const bool ids = len.has_value();
    if (!len) len = length_suffix(it.key(), "attention_mask");
    if (!len || !outputs.count(*len)) {
      cmp.fail("expected tensor '" + it.key() + "' is not input_ids_<L> / attention_mask_<L> for L in max_lengths");
      continue;
    }
    const T5TokenizerOutput& out = outputs[*len];
    cmp.compare(it.key(), ids ? out.input_ids : out.attention_mask, required_parity_tensor(c, it.key()));
  }
  if (c.params.contains("untruncated_lengths")) {
    const auto expected = c.params["untruncated_lengths"].get<std::vector<int64_t>>();
    if (expected.size() != prompts.size()) cmp.fail("params.untruncated_lengths has not one entry per prompt");
    const T5TokenizerOutput& out = outputs.begin()->second;
    for (size_t i = 0; i < expected.size() && i < prompts.size(); ++i) {
      cmp.compare_scalar("untruncated_lengths[" + std::to_string(i) + "]",
                         static_cast<double>(out.untruncated_lengths[i]), static_cast<double>(expected[i]));
      cmp.compare_scalar("untruncated_length(prompts[" + std::to_string(i) + "])",
                         static_cast<double>(tok->untruncated_length(prompts[i])), static_cast<double>(expected[i]));
    }
  }
  // The tokenizer's special ids and sizes as transformers reported them.
  const std::map<std::string, int64_t> props = {{"pad_token_id", tok->pad_token_id()},
                                                {"eos_token_id", tok->eos_token_id()},
                                                {"unk_token_id", tok->unk_token_id()},
                                                {"sentencepiece_pieces", tok->vocab_size()},
                                                {"vocab_size", tok->vocab_size() + tok->extra_ids()},
                                                {"extra_ids", tok->extra_ids()}};
  for (const auto& [key, got] : props)
    if (c.params.contains(key) && c.params[key].is_number_integer())
      cmp.compare_scalar(key, static_cast<double>(got), static_cast<double>(c.params[key].get<int64_t>()));
  // The same spiece.model in other folders (FLUX tokenizer_2, SD3 tokenizer_3) must give the same ids.
  if (c.params.contains("same_spiece_model_in") && c.params["same_spiece_model_in"].is_array()) {
    for (const auto& rel : c.params["same_spiece_model_in"]) {
      const std::string other = (fs::path(c.models_dir) / rel.get<std::string>()).string();
      auto t = T5Tokenizer::from_pretrained(other);
      for (int64_t len : lengths) {
        const std::string name = "input_ids_" + std::to_string(len);
        if (c.expected.contains(name))
          cmp.compare(rel.get<std::string>() + ":" + name, (*t)(prompts, len).input_ids, required_parity_tensor(c, name));
      }
    }
  }
  return cmp.result();
}

ParityResult run_t5_encoder_case(const ParityCase& c) {
  c10::InferenceMode guard;
  const std::string folder = parity_model_folder(c);
  const std::string sub = c.params.value("subfolder", std::string("text_encoder_2"));
  auto model = load_t5_encoder_model(folder, sub);
  ParityComparison cmp(c.tolerance);
  const T5Config& config = model->config;
  if (c.params.contains("feed_forward_proj") && c.params["feed_forward_proj"] != config.feed_forward_proj())
    cmp.fail("params.feed_forward_proj is " + c.params["feed_forward_proj"].dump() + " but the model's config says '" +
             config.feed_forward_proj() + "'");
  const std::map<std::string, double> sizes = {
      {"d_model", static_cast<double>(config.d_model())},
      {"d_kv", static_cast<double>(config.d_kv())},
      {"d_ff", static_cast<double>(config.d_ff())},
      {"num_layers", static_cast<double>(config.num_layers())},
      {"num_heads", static_cast<double>(config.num_heads())},
      {"relative_attention_num_buckets", static_cast<double>(config.relative_attention_num_buckets())},
      {"relative_attention_max_distance", static_cast<double>(config.relative_attention_max_distance())},
      {"layer_norm_epsilon", config.layer_norm_epsilon()}};
  for (const auto& [key, got] : sizes)
    if (c.params.contains(key) && c.params[key].is_number()) cmp.compare_scalar(key, got, c.params[key].get<double>());

  const at::Tensor ids = required_parity_tensor(c, "input_ids");
  model->check_input_ids(ids);
  std::optional<T5EncoderModelOutput> plain, masked;
  for (auto it = c.expected.begin(); it != c.expected.end(); ++it) {
    const std::string& name = it.key();
    at::Tensor got;
    if (name == "last_hidden_state" || name == "hidden_states_embeddings") {
      if (!plain) plain = model->forward(ids);
      got = name == "last_hidden_state" ? plain->last_hidden_state : plain->inputs_embeds;
    } else if (name == "last_hidden_state_masked") {
      if (!masked) masked = model->forward(ids, required_parity_tensor(c, "attention_mask"));
      got = masked->last_hidden_state;
    } else {
      cmp.fail("expected tensor '" + name + "' has no counterpart in the T5EncoderModel outputs");
      continue;
    }
    cmp.compare(name, got, required_parity_tensor(c, name));
  }
  return cmp.result();
}

void register_t5_case_runners() {
  register_component_case_runner("T5EncoderModel", run_t5_encoder_case);
  register_case_runner("tokenizer", run_tokenizer_kind);
}

}  // namespace tessera
