#include "models/text/t5_encoder.h"

#include <torch/nn/functional/activation.h>

#include <cmath>
#include <limits>

#include "tessera/error.h"
#include "tessera/registry.h"
#include "tessera/value.h"
#include "models/common/attention_dispatch.h"
#include "models/common/precision.h"
#include "models/loading/config_reader.h"
#include "models/loading/diffusers_folder.h"
#include "models/loading/skip_init.h"
#include "models/loading/state_dict.h"
#include "models/text/t5_tokenizer.h"

namespace tessera {

// ---- config ----

T5Config T5Config::from_config(ModelConfig& c) {
  T5Config o;
  o.vocab_size(c.get_int("vocab_size", o.vocab_size()));
  o.d_model(c.get_int("d_model", o.d_model()));
  o.d_kv(c.get_int("d_kv", o.d_kv()));
  o.d_ff(c.get_int("d_ff", o.d_ff()));
  o.num_layers(c.get_int("num_layers", o.num_layers()));
  o.num_heads(c.get_int("num_heads", o.num_heads()));
  o.relative_attention_num_buckets(c.get_int("relative_attention_num_buckets", o.relative_attention_num_buckets()));
  o.relative_attention_max_distance(c.get_int("relative_attention_max_distance", o.relative_attention_max_distance()));
  o.layer_norm_epsilon(c.get_float("layer_norm_epsilon", o.layer_norm_epsilon()));
  // T5Config derives the activation from feed_forward_proj ("relu", "gated-gelu", "gelu", "gated-silu"…);
  // Tessera implements the two that T5 / T5 v1.1 checkpoints use.
  const std::string proj = c.get_string("feed_forward_proj", o.feed_forward_proj());
  if (proj == "relu") {
    o.dense_act_fn("relu").is_gated_act(false);
  } else if (proj == "gated-gelu") {
    o.dense_act_fn("gelu_new").is_gated_act(true);  // transformers' backwards-compatible mapping of gated-gelu
  } else {
    c.fail("feed_forward_proj", "'" + proj +
                                    "' is not supported by Tessera's T5EncoderModel (supported: 'relu', 'gated-gelu')");
  }
  o.feed_forward_proj(proj);
  // transformers sets config.json's own dense_act_fn / is_gated_act over the derived values: they must agree.
  const std::string act = c.get_string("dense_act_fn", o.dense_act_fn());
  if (act != o.dense_act_fn())
    c.fail("dense_act_fn", "'" + act + "' contradicts feed_forward_proj '" + proj + "' (which means '" +
                               o.dense_act_fn() + "'); Tessera supports only the derived activation");
  const bool gated = c.get_bool("is_gated_act", o.is_gated_act());
  if (gated != o.is_gated_act())
    c.fail("is_gated_act", std::string(gated ? "true" : "false") + " contradicts feed_forward_proj '" + proj + "'");
  const std::string model_type = c.get_string("model_type", "t5");
  if (model_type != "t5" && model_type != "mt5")
    c.fail("model_type", "'" + model_type + "' is not a T5 encoder Tessera supports ('t5', 'mt5'; UMT5 has a "
                                            "relative attention bias in every block)");
  // Decoder, training and bookkeeping fields: no effect on the encoder's inference.
  for (const char* f : {"architectures", "classifier_dropout", "decoder_start_token_id", "dropout_rate", "eos_token_id",
                        "pad_token_id", "bos_token_id", "initializer_factor", "is_encoder_decoder", "is_decoder",
                        "num_decoder_layers", "use_cache", "output_past", "tie_word_embeddings", "torch_dtype",
                        "transformers_version", "n_positions", "task_specific_params", "gradient_checkpointing",
                        "tokenizer_class"})
    c.accept(f);
  for (auto [name, v] : {std::pair<const char*, int64_t>{"vocab_size", o.vocab_size()},
                         {"d_model", o.d_model()},
                         {"d_kv", o.d_kv()},
                         {"d_ff", o.d_ff()},
                         {"num_layers", o.num_layers()},
                         {"num_heads", o.num_heads()}})
    if (v <= 0) c.fail(name, "must be positive, got " + std::to_string(v));
  // Bidirectional bucketing: num_buckets/2 per direction, half of them exact (max_exact = num_buckets/4), the rest
  // logarithmic up to max_distance; fewer than 4 buckets or max_distance <= max_exact give NaN buckets.
  const int64_t max_exact = o.relative_attention_num_buckets() / 4;
  if (o.relative_attention_num_buckets() < 4)
    c.fail("relative_attention_num_buckets", "must be at least 4, got " +
                                                 std::to_string(o.relative_attention_num_buckets()));
  if (o.relative_attention_max_distance() <= max_exact)
    c.fail("relative_attention_max_distance", "must exceed relative_attention_num_buckets / 4 (" +
                                                  std::to_string(max_exact) + "), got " +
                                                  std::to_string(o.relative_attention_max_distance()));
  if (!(o.layer_norm_epsilon() > 0)) c.fail("layer_norm_epsilon", "must be positive");
  return o;
}

// ---- T5LayerNorm ----

T5LayerNormImpl::T5LayerNormImpl(int64_t hidden_size, double eps) : variance_epsilon(eps) {
  weight = register_parameter("weight", at::ones({hidden_size}));
}

at::Tensor T5LayerNormImpl::forward(const at::Tensor& hidden_states) {
  // Variance in float32 without the mean; the normed value is cast to a half/bfloat16 weight's dtype.
  const at::Tensor variance = hidden_states.to(at::kFloat).pow(2).mean(-1, /*keepdim=*/true);  // [B, S, 1]
  at::Tensor h = hidden_states * at::rsqrt(variance + variance_epsilon);                      // [B, S, d]
  if (weight.scalar_type() == at::kHalf || weight.scalar_type() == at::kBFloat16) h = h.to(weight.scalar_type());
  return weight * h;
}

// ---- attention ----

at::Tensor T5AttnProcessor::forward(T5AttentionImpl& attn, const at::Tensor& hidden_states,
                                    const at::Tensor& position_bias) {
  const int64_t batch = hidden_states.size(0);
  at::Tensor query = attn.q(hidden_states);  // [B, S, inner]
  at::Tensor key = attn.k(hidden_states);    // [B, S, inner]
  at::Tensor value = attn.v(hidden_states);  // [B, S, inner]
  query = query.view({batch, -1, attn.n_heads, attn.key_value_proj_dim}).transpose(1, 2);  // [B, heads, S, d_kv]
  key = key.view({batch, -1, attn.n_heads, attn.key_value_proj_dim}).transpose(1, 2);      // [B, heads, S, d_kv]
  value = value.view({batch, -1, attn.n_heads, attn.key_value_proj_dim}).transpose(1, 2);  // [B, heads, S, d_kv]

  // T5 does not scale the scores (Mesh TensorFlow folds 1/sqrt(d_kv) into the initialisation): scale 1.0; the
  // relative bias (plus the padding mask) is added to the scores, softmax in float32.
  at::Tensor out = dispatch_attention(query, key, value, position_bias, 1.0);  // [B, heads, S, d_kv]
  out = out.transpose(1, 2).contiguous().view({batch, -1, attn.inner_dim});   // [B, S, inner]
  return attn.o(out);                                                          // [B, S, d_model]
}

T5AttentionImpl::T5AttentionImpl(const T5Config& config, bool has_bias)
    : has_relative_attention_bias(has_bias),
      num_buckets(config.relative_attention_num_buckets()),
      max_distance(config.relative_attention_max_distance()),
      n_heads(config.num_heads()),
      key_value_proj_dim(config.d_kv()),
      inner_dim(config.num_heads() * config.d_kv()),
      processor_(std::make_shared<T5AttnProcessor>()) {
  auto linear = [](int64_t in, int64_t out) { return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false)); };
  q = register_module("q", linear(config.d_model(), inner_dim));
  k = register_module("k", linear(config.d_model(), inner_dim));
  v = register_module("v", linear(config.d_model(), inner_dim));
  o = register_module("o", linear(inner_dim, config.d_model()));
  if (has_relative_attention_bias)
    relative_attention_bias = register_module("relative_attention_bias", torch::nn::Embedding(num_buckets, n_heads));
}

at::Tensor T5AttentionImpl::relative_position_bucket(const at::Tensor& relative_position, int64_t num_buckets,
                                                     int64_t max_distance) {
  // Bidirectional: half of the buckets for keys after the query (positive relative position).
  const int64_t half = num_buckets / 2;
  at::Tensor buckets = (relative_position > 0).to(at::kLong) * half;  // [Lq, Lk]
  const at::Tensor distance = relative_position.abs();                // [Lq, Lk]
  // Half of those are exact increments, the rest logarithmically bigger bins up to max_distance (in float32).
  const int64_t max_exact = half / 2;
  const at::Tensor is_small = distance < max_exact;
  at::Tensor if_large = max_exact + (at::log(distance.to(at::kFloat) / max_exact) /
                                     std::log(static_cast<double>(max_distance) / static_cast<double>(max_exact)) *
                                     (half - max_exact))
                                        .to(at::kLong);
  if_large = at::min(if_large, at::full_like(if_large, half - 1));
  return buckets + at::where(is_small, distance, if_large);
}

at::Tensor T5AttentionImpl::compute_bias(int64_t query_length, int64_t key_length) {
  const auto opts = at::TensorOptions().dtype(at::kLong).device(relative_attention_bias->weight.device());
  const at::Tensor context_position = at::arange(query_length, opts).unsqueeze(1);  // [Lq, 1]
  const at::Tensor memory_position = at::arange(key_length, opts).unsqueeze(0);     // [1, Lk]
  const at::Tensor relative_position = memory_position - context_position;          // [Lq, Lk]
  const at::Tensor bucket = relative_position_bucket(relative_position, num_buckets, max_distance);
  const at::Tensor values = relative_attention_bias(bucket);  // [Lq, Lk, heads]
  return values.permute({2, 0, 1}).unsqueeze(0);              // [1, heads, Lq, Lk]
}

at::Tensor T5AttentionImpl::forward(const at::Tensor& hidden_states, const at::Tensor& position_bias) {
  return processor_->forward(*this, hidden_states, position_bias);
}

void T5AttentionImpl::set_processor(std::shared_ptr<T5AttentionProcessor> processor) {
  if (!processor) throw ValidationError("T5Attention::set_processor: the processor is null");
  processor_ = std::move(processor);
}

T5LayerSelfAttentionImpl::T5LayerSelfAttentionImpl(const T5Config& config, bool has_relative_attention_bias)
    : SelfAttention(register_module("SelfAttention", T5Attention(config, has_relative_attention_bias))),
      layer_norm(register_module("layer_norm", T5LayerNorm(config.d_model(), config.layer_norm_epsilon()))) {}

at::Tensor T5LayerSelfAttentionImpl::forward(const at::Tensor& hidden_states, const at::Tensor& position_bias) {
  const at::Tensor normed = layer_norm(hidden_states);
  return hidden_states + SelfAttention(normed, position_bias);  // dropout: identity in evaluation
}

// ---- feed-forward ----

namespace {
/// transformers' NewGELUActivation ("gelu_new"), the explicit tanh formula in transformers' order.
at::Tensor gelu_new(const at::Tensor& x) {
  return 0.5 * x * (1.0 + at::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * at::pow(x, 3.0))));
}
}  // namespace

T5DenseReluDenseImpl::T5DenseReluDenseImpl(const T5Config& config)
    : is_gated_act(config.is_gated_act()), dense_act_fn(config.dense_act_fn()) {
  auto linear = [](int64_t in, int64_t out) { return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false)); };
  if (is_gated_act) {
    wi_0 = register_module("wi_0", linear(config.d_model(), config.d_ff()));
    wi_1 = register_module("wi_1", linear(config.d_model(), config.d_ff()));
  } else {
    wi = register_module("wi", linear(config.d_model(), config.d_ff()));
  }
  wo = register_module("wo", linear(config.d_ff(), config.d_model()));
}

at::Tensor T5DenseReluDenseImpl::forward(const at::Tensor& hidden_states) {
  auto act = [this](const at::Tensor& x) { return dense_act_fn == "gelu_new" ? gelu_new(x) : at::relu(x); };
  at::Tensor h;
  if (is_gated_act) {
    const at::Tensor hidden_gelu = act(wi_0(hidden_states));  // [B, S, d_ff]
    const at::Tensor hidden_linear = wi_1(hidden_states);     // [B, S, d_ff]
    h = hidden_gelu * hidden_linear;
  } else {
    h = act(wi(hidden_states));  // [B, S, d_ff]
  }
  // transformers keeps `wo` in its own dtype (float32 for fp16 checkpoints): follow its weight's dtype.
  if (h.scalar_type() != wo->weight.scalar_type()) h = h.to(wo->weight.scalar_type());
  return wo(h);  // [B, S, d_model]
}

T5LayerFFImpl::T5LayerFFImpl(const T5Config& config)
    : DenseReluDense(register_module("DenseReluDense", T5DenseReluDense(config))),
      layer_norm(register_module("layer_norm", T5LayerNorm(config.d_model(), config.layer_norm_epsilon()))) {}

at::Tensor T5LayerFFImpl::forward(const at::Tensor& hidden_states) {
  const at::Tensor forwarded = DenseReluDense(layer_norm(hidden_states));
  return hidden_states + forwarded;
}

// ---- blocks and stack ----

T5BlockImpl::T5BlockImpl(const T5Config& config, bool has_relative_attention_bias)
    : layer(register_module("layer", torch::nn::ModuleList())) {
  layer->push_back(T5LayerSelfAttention(config, has_relative_attention_bias));
  layer->push_back(T5LayerFF(config));
}

at::Tensor T5BlockImpl::forward(const at::Tensor& hidden_states, const at::Tensor& position_bias) {
  at::Tensor h = layer[0]->as<T5LayerSelfAttention>()->forward(hidden_states, position_bias);
  return layer[1]->as<T5LayerFF>()->forward(h);
}

T5StackImpl::T5StackImpl(const T5Config& config)
    : block(register_module("block", torch::nn::ModuleList())),
      final_layer_norm(register_module("final_layer_norm", T5LayerNorm(config.d_model(), config.layer_norm_epsilon()))) {
  for (int64_t i = 0; i < config.num_layers(); ++i) block->push_back(T5Block(config, /*has_relative_attention_bias=*/i == 0));
}

at::Tensor T5StackImpl::forward(const at::Tensor& inputs_embeds, const at::Tensor& attention_mask,
                                std::vector<at::Tensor>* all) {
  const int64_t batch = inputs_embeds.size(0), seq_len = inputs_embeds.size(1);
  const auto dtype = inputs_embeds.scalar_type();
  // Block 0 computes the relative position bias; every block reuses it (transformers passes it on).
  auto attention0 = block[0]->as<T5Block>()->layer[0]->as<T5LayerSelfAttention>()->SelfAttention;
  at::Tensor position_bias = attention0->compute_bias(seq_len, seq_len);  // [1, heads, S, S]
  if (attention_mask.defined()) {
    // (1 - mask) * finfo(dtype).min on the keys; without a mask transformers adds zeros, i.e. nothing.
    const double min_value = dtype == at::kHalf       ? -65504.0
                             : dtype == at::kBFloat16 ? -3.3895313892515355e38
                                                      : static_cast<double>(std::numeric_limits<float>::lowest());
    at::Tensor extended = attention_mask.to(dtype).view({batch, 1, 1, seq_len});  // [B, 1, 1, S]
    extended = (1.0 - extended) * min_value;
    position_bias = position_bias + extended;  // [B, heads, S, S]
  }
  at::Tensor h = inputs_embeds;  // dropout: identity in evaluation
  for (const auto& b : *block) {
    if (all) all->push_back(h);
    h = b->as<T5Block>()->forward(h, position_bias);
  }
  h = final_layer_norm(h);
  if (all) all->push_back(h);
  return h;
}

// ---- model ----

T5EncoderModelImpl::T5EncoderModelImpl(const T5Config& config_)
    : config(config_),
      shared(register_module("shared", torch::nn::Embedding(config_.vocab_size(), config_.d_model()))),
      encoder(register_module("encoder", T5Stack(config_))) {}

T5EncoderModelOutput T5EncoderModelImpl::forward(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                                 bool output_hidden_states) {
  if (input_ids.dim() != 2 || at::isFloatingType(input_ids.scalar_type()) || input_ids.scalar_type() == at::kBool)
    throw InputError("T5EncoderModel: input_ids must be a [batch, seq_len] integer tensor, got " +
                     std::string(input_ids.toString()) + " of " + std::to_string(input_ids.dim()) + " dims");
  if (input_ids.size(1) < 1) throw InputError("T5EncoderModel: input_ids has no tokens (seq_len 0)");
  if (attention_mask.defined() && attention_mask.sizes() != input_ids.sizes())
    throw InputError("T5EncoderModel: attention_mask must have input_ids' shape [" + std::to_string(input_ids.size(0)) +
                     ", " + std::to_string(input_ids.size(1)) + "], got " + std::to_string(attention_mask.dim()) +
                     " dims");
  T5EncoderModelOutput out;
  out.inputs_embeds = shared(input_ids.to(at::kLong));  // [B, S, d_model]
  std::vector<at::Tensor> all;
  out.last_hidden_state = to_float32(encoder(out.inputs_embeds, attention_mask, output_hidden_states ? &all : nullptr));
  out.inputs_embeds = to_float32(out.inputs_embeds);
  for (auto& h : all) out.hidden_states.push_back(to_float32(h));
  return out;
}

void T5EncoderModelImpl::check_input_ids(const at::Tensor& input_ids) const {
  if (input_ids.dim() != 2 || at::isFloatingType(input_ids.scalar_type()) || input_ids.scalar_type() == at::kBool)
    throw InputError("T5EncoderModel: input_ids must be a [batch, seq_len] integer tensor");
  if (input_ids.numel() == 0) return;
  const int64_t lo = input_ids.min().item<int64_t>(), hi = input_ids.max().item<int64_t>();
  if (lo < 0 || hi >= config.vocab_size())
    throw InputError("T5EncoderModel: token ids must lie in 0.." + std::to_string(config.vocab_size() - 1) +
                     " (vocab_size), got " + std::to_string(lo) + ".." + std::to_string(hi));
}

size_t T5EncoderModelImpl::nbytes() const { return module_nbytes(*this); }

// ---- loading ----

namespace {

constexpr const char* kShared = "shared.weight";
constexpr const char* kEmbedTokens = "encoder.embed_tokens.weight";

std::string shape_str(c10::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

std::string join_files(const std::vector<std::string>& files) {
  std::string out;
  for (const auto& f : files) out += (out.empty() ? "" : ", ") + f;
  return out;
}

std::shared_ptr<T5EncoderModelImpl> load_impl(const std::string& folder, const std::string& subfolder,
                                              const std::string& variant, at::ScalarType dtype, const Value& overrides) {
  ModelConfig cfg = ModelConfig::from_folder(folder, subfolder);
  cfg.apply_overrides(overrides);
  const T5Config config = T5Config::from_config(cfg);
  cfg.finish();
  const std::vector<std::string> files =
      resolve_weight_files(component_dir(folder, subfolder), kTransformersWeightsName, variant);

  // The tied token embedding: `shared.weight`, `encoder.embed_tokens.weight`, or both (then equal).
  const std::vector<int64_t> expected = {config.vocab_size(), config.d_model()};
  at::Tensor from_embed_tokens;  // set when only encoder.embed_tokens.weight is present
  {
    const auto tensors = read_safetensors_files(files);
    const auto shared_it = tensors.find(kShared), embed_it = tensors.find(kEmbedTokens);
    if (shared_it == tensors.end() && embed_it == tensors.end())
      throw ModelLoadError("T5EncoderModel: tensor '" + std::string(kShared) + "' " + shape_str(expected) +
                           " (or its tied copy '" + kEmbedTokens + "') is missing from " + join_files(files));
    if (embed_it != tensors.end() && embed_it->second.sizes() != c10::IntArrayRef(expected))
      throw ModelLoadError("T5EncoderModel: tensor '" + std::string(kEmbedTokens) + "' has shape " +
                           shape_str(embed_it->second.sizes()) + " but the model expects " + shape_str(expected) +
                           " (vocab_size, d_model) in " + join_files(files));
    if (shared_it != tensors.end() && embed_it != tensors.end()) {
      const at::Tensor a = shared_it->second, b = embed_it->second;
      const bool same = a.scalar_type() == b.scalar_type() ? at::equal(a, b) : at::equal(a.to(at::kFloat), b.to(at::kFloat));
      if (a.sizes() == b.sizes() && !same) {
        const double diff = (a.to(at::kFloat) - b.to(at::kFloat)).abs().max().item<double>();
        throw ModelLoadError("T5EncoderModel: '" + std::string(kShared) + "' and '" + kEmbedTokens +
                             "' are one tied embedding in transformers but differ in " + join_files(files) +
                             " (max abs difference " + std::to_string(diff) +
                             "); remove the wrong one or re-export the checkpoint");
      }
    } else if (shared_it == tensors.end()) {
      from_embed_tokens = embed_it->second;
    }
  }

  std::shared_ptr<T5EncoderModelImpl> model;
  {
    SkipRandomInit skip;  // every parameter is loaded below (shared.weight possibly from its tied copy)
    model = std::make_shared<T5EncoderModelImpl>(config);
  }
  LoadStateDictOptions load;
  load.dtype = dtype;
  // Checked above: shared.weight may be absent (loaded from the tie below); the tie itself has no module tensor.
  load.ignore = {kShared, kEmbedTokens};
  load_state_dict(*model, files, load);
  if (from_embed_tokens.defined()) {
    torch::NoGradGuard no_grad;
    model->shared->weight.copy_(from_embed_tokens.to(dtype));
  }
  model->eval();
  return model;
}

ComponentPtr create_t5_encoder(const ComponentSpec& spec) {
  const at::ScalarType dtype = model_dtype(spec);
  if (spec.creation == Creation::FromConfig) {
    ModelConfig cfg(nlohmann::json::object(), "component '" + spec.name + "' config");
    cfg.apply_overrides(spec.config);
    auto model = std::make_shared<T5EncoderModelImpl>(T5Config::from_config(cfg));
    cfg.finish();
    if (dtype != at::kFloat) model->to(dtype);
    model->eval();
    return model;
  }
  return load_impl(spec.from, spec.subfolder, spec.variant, dtype, spec.config);
}

}  // namespace

std::shared_ptr<T5EncoderModelImpl> load_t5_encoder_model(const std::string& folder, const std::string& subfolder,
                                                          const std::string& variant, at::ScalarType dtype) {
  return load_impl(folder, subfolder, variant, dtype, Value());
}

void register_t5_encoder(Registry& registry) {
  registry.add_component_type({"T5EncoderModel", ComponentCategory::Model,
                               "transformers' T5 encoder (FLUX text_encoder_2, SD3 text_encoder_3): last_hidden_state",
                               create_t5_encoder, {}});
  register_t5_tokenizer(registry);
}

}  // namespace tessera
