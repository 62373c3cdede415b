#include "models/text/clip_text_model.h"

#include <torch/nn/functional/activation.h>

#include <cmath>
#include <filesystem>
#include <limits>

#include "tessera/error.h"
#include "tessera/registry.h"
#include "tessera/value.h"
#include "models/common/attention_dispatch.h"
#include "models/common/precision.h"
#include "models/adapters/lora.h"
#include "models/loading/component_source.h"
#include "models/loading/config_reader.h"
#include "models/loading/model_defaults.h"
#include "models/loading/skip_init.h"
#include "models/loading/diffusers_folder.h"
#include "models/loading/state_dict.h"
#include "models/text/clip_tokenizer.h"

namespace tessera {

// ---- config ----

CLIPTextConfig CLIPTextConfig::from_config(ModelConfig& c) {
  CLIPTextConfig o;
  o.vocab_size(c.get_int("vocab_size", o.vocab_size()));
  o.hidden_size(c.get_int("hidden_size", o.hidden_size()));
  o.intermediate_size(c.get_int("intermediate_size", o.intermediate_size()));
  o.projection_dim(c.get_int("projection_dim", o.projection_dim()));
  o.num_hidden_layers(c.get_int("num_hidden_layers", o.num_hidden_layers()));
  o.num_attention_heads(c.get_int("num_attention_heads", o.num_attention_heads()));
  o.max_position_embeddings(c.get_int("max_position_embeddings", o.max_position_embeddings()));
  o.hidden_act(c.get_choice("hidden_act", o.hidden_act(),
                            {"quick_gelu", "gelu", "gelu_new", "gelu_pytorch_tanh", "relu"}));
  o.layer_norm_eps(c.get_float("layer_norm_eps", o.layer_norm_eps()));
  o.pad_token_id(c.get_int("pad_token_id", o.pad_token_id()));
  o.bos_token_id(c.get_int("bos_token_id", o.bos_token_id()));
  o.eos_token_id(c.get_int("eos_token_id", o.eos_token_id()));
  // Training-only or bookkeeping fields of transformers' config.
  for (const char* f : {"attention_dropout", "dropout", "initializer_factor", "initializer_range", "architectures",
                        "model_type", "torch_dtype", "transformers_version", "_name_or_path"})
    c.accept(f);
  for (auto [name, v] : {std::pair<const char*, int64_t>{"vocab_size", o.vocab_size()},
                         {"hidden_size", o.hidden_size()},
                         {"intermediate_size", o.intermediate_size()},
                         {"projection_dim", o.projection_dim()},
                         {"num_attention_heads", o.num_attention_heads()},
                         {"max_position_embeddings", o.max_position_embeddings()}})
    if (v <= 0) c.fail(name, "must be positive, got " + std::to_string(v));
  if (o.num_hidden_layers() < 0) c.fail("num_hidden_layers", "must not be negative");
  if (o.hidden_size() % o.num_attention_heads() != 0)
    c.fail("hidden_size", "must be divisible by num_attention_heads (" + std::to_string(o.num_attention_heads()) + ")");
  if (!(o.layer_norm_eps() > 0)) c.fail("layer_norm_eps", "must be positive");
  return o;
}

// ---- embeddings ----

CLIPTextEmbeddingsImpl::CLIPTextEmbeddingsImpl(const CLIPTextConfig& config)
    : token_embedding(register_module(
          "token_embedding", torch::nn::Embedding(config.vocab_size(), config.hidden_size()))),
      position_embedding(register_module(
          "position_embedding", torch::nn::Embedding(config.max_position_embeddings(), config.hidden_size()))) {}

at::Tensor CLIPTextEmbeddingsImpl::forward(const at::Tensor& input_ids) {
  const int64_t seq_len = input_ids.size(-1);
  // transformers' position_ids buffer is arange(max_position_embeddings)[None]; its first S entries.
  const at::Tensor position_ids = at::arange(seq_len, input_ids.options().dtype(at::kLong)).unsqueeze(0);  // [1, S]
  at::Tensor inputs_embeds = token_embedding(input_ids);            // [B, S, H]
  at::Tensor position_embeds = position_embedding(position_ids);    // [1, S, H]
  return inputs_embeds + position_embeds;
}

// ---- attention ----

CLIPAttentionImpl::CLIPAttentionImpl(const CLIPTextConfig& config)
    : num_heads(config.num_attention_heads()),
      head_dim(config.hidden_size() / config.num_attention_heads()),
      scale(1.0 / std::sqrt(static_cast<double>(config.hidden_size() / config.num_attention_heads()))),
      q_proj(register_module("q_proj", torch::nn::Linear(config.hidden_size(), config.hidden_size()))),
      k_proj(register_module("k_proj", torch::nn::Linear(config.hidden_size(), config.hidden_size()))),
      v_proj(register_module("v_proj", torch::nn::Linear(config.hidden_size(), config.hidden_size()))),
      out_proj(register_module("out_proj", torch::nn::Linear(config.hidden_size(), config.hidden_size()))) {}

at::Tensor CLIPAttentionImpl::forward(const at::Tensor& hidden_states, const at::Tensor& attention_mask) {
  const int64_t batch = hidden_states.size(0), seq_len = hidden_states.size(1), hidden = hidden_states.size(2);
  at::Tensor query = q_proj(hidden_states);  // [B, S, H]
  at::Tensor key = k_proj(hidden_states);    // [B, S, H]
  at::Tensor value = v_proj(hidden_states);  // [B, S, H]
  query = query.view({batch, seq_len, num_heads, head_dim}).transpose(1, 2);  // [B, heads, S, d]
  key = key.view({batch, seq_len, num_heads, head_dim}).transpose(1, 2);      // [B, heads, S, d]
  value = value.view({batch, seq_len, num_heads, head_dim}).transpose(1, 2);  // [B, heads, S, d]

  // The additive mask holds finfo.min (not -inf), so no row is fully masked and no NaN can appear.
  at::Tensor attn = dispatch_attention(query, key, value, attention_mask, scale);  // [B, heads, S, d]
  attn = attn.transpose(1, 2).reshape({batch, seq_len, hidden});                  // [B, S, H]
  return out_proj(attn);
}

// ---- MLP and layers ----

CLIPMLPImpl::CLIPMLPImpl(const CLIPTextConfig& config)
    : hidden_act(config.hidden_act()),
      fc1(register_module("fc1", torch::nn::Linear(config.hidden_size(), config.intermediate_size()))),
      fc2(register_module("fc2", torch::nn::Linear(config.intermediate_size(), config.hidden_size()))) {}

at::Tensor CLIPMLPImpl::forward(const at::Tensor& hidden_states) {
  at::Tensor h = fc1(hidden_states);  // [B, S, I]
  if (hidden_act == "quick_gelu") h = h * at::sigmoid(1.702 * h);
  else if (hidden_act == "gelu") h = at::gelu(h);
  else if (hidden_act == "gelu_new" || hidden_act == "gelu_pytorch_tanh") h = at::gelu(h, "tanh");
  else h = at::relu(h);
  return fc2(h);  // [B, S, H]
}

CLIPEncoderLayerImpl::CLIPEncoderLayerImpl(const CLIPTextConfig& config)
    : self_attn(register_module("self_attn", CLIPAttention(config))),
      layer_norm1(register_module(
          "layer_norm1",
          torch::nn::LayerNorm(torch::nn::LayerNormOptions({config.hidden_size()}).eps(config.layer_norm_eps())))),
      mlp(register_module("mlp", CLIPMLP(config))),
      layer_norm2(register_module(
          "layer_norm2",
          torch::nn::LayerNorm(torch::nn::LayerNormOptions({config.hidden_size()}).eps(config.layer_norm_eps())))) {}

at::Tensor CLIPEncoderLayerImpl::forward(const at::Tensor& hidden_states, const at::Tensor& attention_mask) {
  at::Tensor residual = hidden_states;
  at::Tensor h = layer_norm_fp32(*layer_norm1, hidden_states);
  h = self_attn(h, attention_mask);
  h = residual + h;
  residual = h;
  h = layer_norm_fp32(*layer_norm2, h);
  h = mlp(h);
  return residual + h;
}

CLIPEncoderImpl::CLIPEncoderImpl(const CLIPTextConfig& config)
    : layers(register_module("layers", torch::nn::ModuleList())) {
  for (int64_t i = 0; i < config.num_hidden_layers(); ++i) layers->push_back(CLIPEncoderLayer(config));
}

at::Tensor CLIPEncoderImpl::forward(const at::Tensor& inputs_embeds, const at::Tensor& attention_mask,
                                    std::vector<at::Tensor>* all) {
  at::Tensor h = inputs_embeds;
  if (all) all->push_back(h);
  for (const auto& layer : *layers) {
    h = layer->as<CLIPEncoderLayer>()->forward(h, attention_mask);
    if (all) all->push_back(h);
  }
  return h;
}

// ---- transformer ----

CLIPTextTransformerImpl::CLIPTextTransformerImpl(const CLIPTextConfig& config_)
    : config(config_),
      embeddings(register_module("embeddings", CLIPTextEmbeddings(config_))),
      encoder(register_module("encoder", CLIPEncoder(config_))),
      final_layer_norm(register_module(
          "final_layer_norm",
          torch::nn::LayerNorm(torch::nn::LayerNormOptions({config_.hidden_size()}).eps(config_.layer_norm_eps())))) {}

CLIPTextModelOutput CLIPTextTransformerImpl::forward(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                                     bool output_hidden_states) {
  TORCH_CHECK(input_ids.dim() == 2, "CLIPTextModel: input_ids must be [batch, seq_len], got ", input_ids.sizes());
  TORCH_CHECK(!at::isFloatingType(input_ids.scalar_type()), "CLIPTextModel: input_ids must be integer ids");
  const int64_t batch = input_ids.size(0), seq_len = input_ids.size(1);
  TORCH_CHECK(seq_len >= 1 && seq_len <= config.max_position_embeddings(), "CLIPTextModel: sequence length ",
              seq_len, " is outside 1..max_position_embeddings (", config.max_position_embeddings(), ")");
  if (input_ids.numel() > 0) {
    const int64_t lo = input_ids.min().item<int64_t>(), hi = input_ids.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi < config.vocab_size(), "CLIPTextModel: token ids must lie in 0..", config.vocab_size() - 1,
                ", got ", lo, "..", hi);
  }
  const at::Tensor ids = input_ids.to(at::kLong);

  at::Tensor hidden_states = embeddings(ids);  // [B, S, H]
  const auto dtype = hidden_states.scalar_type();
  const double lowest = static_cast<double>(std::numeric_limits<float>::lowest());
  const double min_value = dtype == at::kHalf ? -65504.0 : dtype == at::kBFloat16 ? -3.3895313892515355e38 : lowest;
  // Causal mask: finfo(dtype).min above the diagonal, as transformers builds it.
  at::Tensor mask = at::full({seq_len, seq_len}, min_value, hidden_states.options()).triu(1);  // [S, S]
  mask = mask.view({1, 1, seq_len, seq_len});                                                      // [1, 1, S, S]
  if (attention_mask.defined()) {
    TORCH_CHECK(attention_mask.sizes() == input_ids.sizes(), "CLIPTextModel: attention_mask must be ",
                input_ids.sizes(), ", got ", attention_mask.sizes());
    at::Tensor padding = (1.0 - attention_mask.to(dtype)) * min_value;               // [B, S]
    padding = padding.view({batch, 1, 1, seq_len});                                   // [B, 1, 1, S]
    mask = (mask + padding).clamp_min(min_value);                                     // [B, 1, S, S]
  }

  CLIPTextModelOutput out;
  at::Tensor encoded = encoder(hidden_states, mask, output_hidden_states ? &out.hidden_states : nullptr);
  out.last_hidden_state = layer_norm_fp32(*final_layer_norm, encoded);  // [B, S, H]

  at::Tensor eos_index;  // [B]
  if (config.eos_token_id() == 2) {
    // Legacy configs (eos_token_id 2 written before the fix): the eos token has the highest id.
    eos_index = ids.to(at::kInt).argmax(-1);
  } else {
    eos_index = (ids.to(at::kInt) == config.eos_token_id()).to(at::kInt).argmax(-1);
  }
  const at::Tensor rows = at::arange(batch, eos_index.options().dtype(at::kLong));
  out.pooler_output = out.last_hidden_state.index({rows, eos_index.to(at::kLong)});  // [B, H]
  return out;
}

// ---- models ----

CLIPTextModelImpl::CLIPTextModelImpl(const CLIPTextConfig& config)
    : text_model(register_module("text_model", CLIPTextTransformer(config))) {}

namespace {
/// Every tensor of `out` in float32 (the models' output convention, models/common/precision.h).
CLIPTextModelOutput outputs_to_float32(CLIPTextModelOutput out) {
  out.last_hidden_state = to_float32(out.last_hidden_state);
  out.pooler_output = to_float32(out.pooler_output);
  out.text_embeds = to_float32(out.text_embeds);
  for (auto& h : out.hidden_states) h = to_float32(h);
  return out;
}
}  // namespace

CLIPTextModelOutput CLIPTextModelImpl::forward(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                               bool output_hidden_states) {
  return outputs_to_float32(text_model(input_ids, attention_mask, output_hidden_states));
}

size_t CLIPTextModelImpl::nbytes() const { return module_nbytes(*this); }

CLIPTextModelWithProjectionImpl::CLIPTextModelWithProjectionImpl(const CLIPTextConfig& config)
    : text_model(register_module("text_model", CLIPTextTransformer(config))),
      text_projection(register_module(
          "text_projection",
          torch::nn::Linear(torch::nn::LinearOptions(config.hidden_size(), config.projection_dim()).bias(false)))) {}

CLIPTextModelOutput CLIPTextModelWithProjectionImpl::forward(const at::Tensor& input_ids,
                                                             const at::Tensor& attention_mask,
                                                             bool output_hidden_states) {
  CLIPTextModelOutput out = text_model(input_ids, attention_mask, output_hidden_states);
  out.text_embeds = text_projection(out.pooler_output);  // [B, projection_dim]
  return outputs_to_float32(std::move(out));
}

size_t CLIPTextModelWithProjectionImpl::nbytes() const { return module_nbytes(*this); }

// ---- loading ----

namespace {

/// Builds Impl from the component's config.json (with `overrides`, a Value map or none), loads its weights
/// (diffusers folder or single-file checkpoint) and fuses the spec's LoRAs.
template <typename Impl>
std::shared_ptr<Impl> load_text_model(const ComponentSpec& spec, at::ScalarType dtype) {
  ModelConfig config = pretrained_component_config(spec);
  config.apply_overrides(spec.config);
  const CLIPTextConfig options = CLIPTextConfig::from_config(config);
  config.finish();
  std::shared_ptr<Impl> model;
  {
    SkipRandomInit skip;  // every parameter is loaded below
    model = std::make_shared<Impl>(options);
  }
  LoadStateDictOptions load;
  load.dtype = dtype;
  load.ignore = {"position_ids"};  // transformers' non-persistent buffer, present in older checkpoints
  load_pretrained_weights(*model, spec, config.json(), kTransformersWeightsName, load);
  fuse_component_loras(*model, spec, config.json());
  model->eval();
  return model;
}

template <typename Impl>
std::shared_ptr<Impl> load_text_model(const std::string& folder, const std::string& subfolder,
                                      const std::string& variant, at::ScalarType dtype) {
  ComponentSpec spec;
  spec.name = subfolder.empty() ? "text_encoder" : subfolder;
  spec.from = folder;
  spec.subfolder = subfolder;
  spec.variant = variant;
  return load_text_model<Impl>(spec, dtype);
}

template <typename Impl>
ComponentPtr create_text_model(const ComponentSpec& spec) {
  const at::ScalarType dtype = model_dtype(spec);
  if (!spec.from.empty()) return load_text_model<Impl>(spec, dtype);
  ModelConfig config(nlohmann::json::object(), "component '" + spec.name + "' config");
  config.apply_overrides(spec.config);
  auto model = std::make_shared<Impl>(CLIPTextConfig::from_config(config));
  config.finish();
  if (dtype != at::kFloat) model->to(dtype);
  fuse_component_loras(*model, spec, config.json());
  model->eval();
  return model;
}

}  // namespace

std::shared_ptr<CLIPTextModelImpl> load_clip_text_model(const std::string& folder, const std::string& subfolder,
                                                        const std::string& variant, at::ScalarType dtype) {
  return load_text_model<CLIPTextModelImpl>(folder, subfolder, variant, dtype);
}

std::shared_ptr<CLIPTextModelWithProjectionImpl> load_clip_text_model_with_projection(
    const std::string& folder, const std::string& subfolder, const std::string& variant, at::ScalarType dtype) {
  return load_text_model<CLIPTextModelWithProjectionImpl>(folder, subfolder, variant, dtype);
}

namespace {

/// Whether `dir` lies inside the shipped defaults folder (model_defaults.h).
bool under_shipped_defaults(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path root;
  try {
    root = fs::weakly_canonical(shipped_defaults_dir(), ec);
  } catch (const Error&) {
    return false;
  }
  const fs::path d = fs::weakly_canonical(dir, ec);
  auto r = root.begin(), x = d.begin();
  for (; r != root.end(); ++r, ++x)
    if (x == d.end() || *r != *x) return false;
  return true;
}

}  // namespace

void register_clip_text_components(Registry& registry) {
  registry.add_component_type(
      {"CLIPTokenizer", ComponentCategory::Tokenizer,
       "transformers' CLIP byte-level BPE tokenizer (vocab.json + merges.txt), padding to model_max_length",
       [](const ComponentSpec& spec) -> ComponentPtr {
         if (spec.from.empty())
           throw ValidationError("component '" + spec.name + "': CLIPTokenizer needs `from` (a tokenizer folder)");
         const std::string dir = component_dir(spec.from, spec.subfolder);
         // The tokenizer folders Tessera ships for single-file checkpoints hold only their configs: the BPE data
         // (the same for every SD family) is shipped once.
         if (!std::filesystem::exists(std::filesystem::path(dir) / "vocab.json") && under_shipped_defaults(dir))
           return CLIPTokenizer::from_pretrained(dir, shipped_clip_vocab_dir());
         return CLIPTokenizer::from_pretrained(dir);
       },
       {}});
  registry.add_component_type({"CLIPTextModel", ComponentCategory::Model,
                               "transformers' CLIP text encoder (last_hidden_state, pooler_output, hidden_states)",
                               create_text_model<CLIPTextModelImpl>, {}, /*accepts_loras=*/true});
  registry.add_component_type({"CLIPTextModelWithProjection", ComponentCategory::Model,
                               "CLIP text encoder with text_projection (SDXL text_encoder_2: text_embeds)",
                               create_text_model<CLIPTextModelWithProjectionImpl>, {}, /*accepts_loras=*/true});
}

}  // namespace tessera
