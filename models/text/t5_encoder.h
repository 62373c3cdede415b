#pragma once
/// T5EncoderModel: transformers' T5 encoder stack (models/t5/modeling_t5.py), the FLUX.1 `text_encoder_2` and
/// the SD3 `text_encoder_3`. Submodules are registered under the checkpoint keys: `shared.weight` (the token
/// embedding), `encoder.block.{i}.layer.0.SelfAttention.{q,k,v,o}.weight`,
/// `encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight` (block 0 only: its bias is shared by
/// every block), `encoder.block.{i}.layer.{0,1}.layer_norm.weight`, `encoder.block.{i}.layer.1.DenseReluDense.*`
/// (`wi`/`wo` for "relu", `wi_0`/`wi_1`/`wo` for "gated-gelu") and `encoder.final_layer_norm.weight`.
/// transformers ties `encoder.embed_tokens` to `shared` (one module); checkpoints carry either key or both
/// (FLUX.1's text_encoder_2 and these tiny files carry only `shared.weight`): see load_t5_encoder_model.
///
///   auto t5 = load_t5_encoder_model("tiny-flux", "text_encoder_2");
///   c10::InferenceMode guard;
///   at::Tensor embeds = t5->forward(ids).last_hidden_state;  // [B, S, d_model], no mask (as FLUX/SD3 call it)
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <memory>
#include <string>
#include <vector>

#include "tessera/components.h"

namespace tessera {

class ModelConfig;
class Registry;

/// transformers' T5Config fields used by the encoder, with transformers' defaults. `dense_act_fn` and
/// `is_gated_act` are derived from `feed_forward_proj` as T5Config does ("relu" → relu, not gated;
/// "gated-gelu" → gelu_new, gated); a config.json that also carries them must agree.
struct T5Config {
  /// Reads a config.json. ModelLoadError naming the field for wrong types, non-positive sizes, a
  /// feed_forward_proj other than "relu" / "gated-gelu", a model_type other than "t5" / "mt5" (UMT5 has a
  /// relative bias in every block), relative-attention buckets that transformers' bucketing cannot use
  /// (num_buckets < 4, max_distance <= num_buckets / 4), or dense_act_fn / is_gated_act contradicting
  /// feed_forward_proj.
  static T5Config from_config(ModelConfig& config);

  TORCH_ARG(int64_t, vocab_size) = 32128;
  TORCH_ARG(int64_t, d_model) = 512;
  TORCH_ARG(int64_t, d_kv) = 64;
  TORCH_ARG(int64_t, d_ff) = 2048;
  TORCH_ARG(int64_t, num_layers) = 6;
  TORCH_ARG(int64_t, num_heads) = 8;
  TORCH_ARG(int64_t, relative_attention_num_buckets) = 32;
  TORCH_ARG(int64_t, relative_attention_max_distance) = 128;
  TORCH_ARG(double, layer_norm_epsilon) = 1e-6;
  TORCH_ARG(std::string, feed_forward_proj) = "relu";  ///< "relu" | "gated-gelu"
  TORCH_ARG(std::string, dense_act_fn) = "relu";       ///< derived: "relu" | "gelu_new"
  TORCH_ARG(bool, is_gated_act) = false;               ///< derived
};

/// Outputs of T5EncoderModel::forward (float32).
struct T5EncoderModelOutput {
  at::Tensor last_hidden_state;          ///< [B, S, d_model] after final_layer_norm
  at::Tensor inputs_embeds;              ///< [B, S, d_model] shared(input_ids) = transformers' hidden_states[0]
  /// With output_hidden_states, transformers' hidden_states: num_layers + 1 tensors [B, S, d_model] (the
  /// embeddings, the outputs of blocks 0..n-2, then last_hidden_state — T5 appends the normed output last).
  std::vector<at::Tensor> hidden_states;
};

/// T5LayerNorm: RMS norm without mean or bias, variance in float32: w * (x * rsqrt(mean(x²) + eps)), the
/// normed value cast to the weight's dtype first when that is half/bfloat16.
class T5LayerNormImpl : public torch::nn::Module {
 public:
  T5LayerNormImpl(int64_t hidden_size, double eps);
  at::Tensor forward(const at::Tensor& hidden_states);

  double variance_epsilon;
  at::Tensor weight;
};
TORCH_MODULE(T5LayerNorm);

class T5AttentionImpl;

/// What a T5Attention computes; swappable per module (T5AttentionImpl::set_processor), like diffusers'
/// attention processors.
class T5AttentionProcessor {
 public:
  virtual ~T5AttentionProcessor() = default;
  virtual std::string name() const = 0;
  /// hidden_states [B, S, d_model]; position_bias additive [B or 1, heads, S, S] (relative bias + padding mask).
  virtual at::Tensor forward(T5AttentionImpl& attn, const at::Tensor& hidden_states,
                             const at::Tensor& position_bias) = 0;
};

/// transformers' eager T5 attention: q/k/v projections, scores q·kᵀ **without** 1/sqrt(d_kv) scaling plus the
/// position bias, softmax in float32, o projection; through dispatch_attention (scale 1.0, the bias as an
/// additive float mask).
class T5AttnProcessor : public T5AttentionProcessor {
 public:
  std::string name() const override { return "T5AttnProcessor"; }
  at::Tensor forward(T5AttentionImpl& attn, const at::Tensor& hidden_states, const at::Tensor& position_bias) override;
};

/// T5Attention (encoder self-attention): q, k, v, o without bias; `relative_attention_bias` Embedding
/// [num_buckets, heads] only when has_relative_attention_bias (block 0).
class T5AttentionImpl : public torch::nn::Module {
 public:
  T5AttentionImpl(const T5Config& config, bool has_relative_attention_bias);
  /// hidden_states [B, S, d_model], position_bias [B or 1, heads, S, S] -> [B, S, d_model]
  at::Tensor forward(const at::Tensor& hidden_states, const at::Tensor& position_bias);
  /// transformers' _relative_position_bucket (bidirectional): bucket ids of relative_position (int64 tensor).
  static at::Tensor relative_position_bucket(const at::Tensor& relative_position, int64_t num_buckets,
                                             int64_t max_distance);
  /// compute_bias: [1, heads, query_length, key_length] from relative_attention_bias (needs it).
  at::Tensor compute_bias(int64_t query_length, int64_t key_length);
  void set_processor(std::shared_ptr<T5AttentionProcessor> processor);
  const std::shared_ptr<T5AttentionProcessor>& processor() const { return processor_; }

  bool has_relative_attention_bias;
  int64_t num_buckets, max_distance, n_heads, key_value_proj_dim, inner_dim;
  torch::nn::Linear q{nullptr}, k{nullptr}, v{nullptr}, o{nullptr};
  torch::nn::Embedding relative_attention_bias{nullptr};

 private:
  std::shared_ptr<T5AttentionProcessor> processor_;
};
TORCH_MODULE(T5Attention);

/// layer.0: x + SelfAttention(layer_norm(x), position_bias).
class T5LayerSelfAttentionImpl : public torch::nn::Module {
 public:
  T5LayerSelfAttentionImpl(const T5Config& config, bool has_relative_attention_bias);
  at::Tensor forward(const at::Tensor& hidden_states, const at::Tensor& position_bias);

  T5Attention SelfAttention{nullptr};
  T5LayerNorm layer_norm{nullptr};
};
TORCH_MODULE(T5LayerSelfAttention);

/// T5DenseActDense ("relu": wo(relu(wi x))) or T5DenseGatedActDense ("gated-gelu": wo(gelu_new(wi_0 x) * wi_1 x),
/// gelu_new = 0.5x(1 + tanh(sqrt(2/π)(x + 0.044715x³))) written out as transformers' NewGELUActivation).
class T5DenseReluDenseImpl : public torch::nn::Module {
 public:
  explicit T5DenseReluDenseImpl(const T5Config& config);
  /// [B, S, d_model] -> [B, S, d_model]
  at::Tensor forward(const at::Tensor& hidden_states);

  bool is_gated_act;
  std::string dense_act_fn;
  torch::nn::Linear wi{nullptr}, wi_0{nullptr}, wi_1{nullptr}, wo{nullptr};
};
TORCH_MODULE(T5DenseReluDense);

/// layer.1: x + DenseReluDense(layer_norm(x)).
class T5LayerFFImpl : public torch::nn::Module {
 public:
  explicit T5LayerFFImpl(const T5Config& config);
  at::Tensor forward(const at::Tensor& hidden_states);

  T5DenseReluDense DenseReluDense{nullptr};
  T5LayerNorm layer_norm{nullptr};
};
TORCH_MODULE(T5LayerFF);

/// One encoder block: `layer` = [T5LayerSelfAttention, T5LayerFF].
class T5BlockImpl : public torch::nn::Module {
 public:
  T5BlockImpl(const T5Config& config, bool has_relative_attention_bias);
  at::Tensor forward(const at::Tensor& hidden_states, const at::Tensor& position_bias);

  torch::nn::ModuleList layer{nullptr};
};
TORCH_MODULE(T5Block);

/// The encoder T5Stack without its embed_tokens (tied to T5EncoderModel::shared, which embeds the ids).
class T5StackImpl : public torch::nn::Module {
 public:
  explicit T5StackImpl(const T5Config& config);
  /// inputs_embeds [B, S, d_model]; attention_mask [B, S] of 0/1 or undefined (= all ones). Returns the output
  /// after final_layer_norm; appends transformers' hidden_states to `all` when given.
  at::Tensor forward(const at::Tensor& inputs_embeds, const at::Tensor& attention_mask,
                     std::vector<at::Tensor>* all = nullptr);

  torch::nn::ModuleList block{nullptr};
  T5LayerNorm final_layer_norm{nullptr};
};
TORCH_MODULE(T5Stack);

/// transformers' T5EncoderModel (component type "T5EncoderModel").
class T5EncoderModelImpl : public torch::nn::Module, public Component {
 public:
  explicit T5EncoderModelImpl(const T5Config& config);
  /// input_ids [B, S] integer ids in 0..vocab_size-1 (check them with check_input_ids: forward does not read
  /// tensor values); attention_mask [B, S] of 0/1 or undefined (FLUX and SD3 pass none). Computes in the
  /// parameters' dtype; every output is float32.
  T5EncoderModelOutput forward(const at::Tensor& input_ids, const at::Tensor& attention_mask = {},
                               bool output_hidden_states = false);
  /// InputError unless `input_ids` is a 2-D integer tensor with every id in 0..vocab_size-1 (reads the values:
  /// call it in the block, outside the forward pass).
  void check_input_ids(const at::Tensor& input_ids) const;
  std::string type() const override { return "T5EncoderModel"; }
  size_t nbytes() const override;

  T5Config config;
  torch::nn::Embedding shared{nullptr};
  T5Stack encoder{nullptr};
};
TORCH_MODULE(T5EncoderModel);

/// Builds a T5EncoderModel from `folder/subfolder/config.json` and loads `model.safetensors` (variant, or shards through `model.safetensors.index.json`; fp16/bf16 files are
/// converted to `dtype`) strictly. The token embedding comes from `shared.weight` or, when the files lack it,
/// from `encoder.embed_tokens.weight`; when both are present they must be equal (ModelLoadError otherwise, not
/// a silent pick). Evaluation mode. ModelLoadError naming files / tensors.
std::shared_ptr<T5EncoderModelImpl> load_t5_encoder_model(const std::string& folder, const std::string& subfolder,
                                                          const std::string& variant = {},
                                                          at::ScalarType dtype = at::kFloat);

/// Registers "T5EncoderModel" (Model category; `from` loads from `from/subfolder`, without `from` the model is
/// built from `config`, random weights, for tests) and the tokenizer types "T5Tokenizer" / "T5TokenizerFast"
/// (register_t5_tokenizer, models/text/t5_tokenizer.h).
void register_t5_encoder(Registry& registry);

}  // namespace tessera
