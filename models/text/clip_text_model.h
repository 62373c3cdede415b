#pragma once
/// CLIPTextModel and CLIPTextModelWithProjection: transformers' CLIP text encoder (SD 1.x text_encoder, SDXL
/// text_encoder / text_encoder_2), submodules registered under the checkpoint keys
/// (`text_model.embeddings.token_embedding.weight`, `text_model.encoder.layers.0.self_attn.q_proj.weight`, …,
/// `text_projection.weight`).
///
///   auto te = load_clip_text_model("sd15", "text_encoder");
///   c10::InferenceMode guard;
///   CLIPTextModelOutput out = te->forward(ids, {}, /*output_hidden_states=*/true);
///   at::Tensor penultimate = out.hidden_states[out.hidden_states.size() - 2];  // clip_skip / SDXL
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <memory>
#include <string>
#include <vector>

#include "tessera/components.h"

namespace tessera {

class ModelConfig;
class Registry;

/// transformers' CLIPTextConfig fields with its defaults.
struct CLIPTextConfig {
  /// Reads a config.json (unknown fields are logged by finish()); ModelLoadError on wrong types or values.
  static CLIPTextConfig from_config(ModelConfig& config);

  TORCH_ARG(int64_t, vocab_size) = 49408;
  TORCH_ARG(int64_t, hidden_size) = 512;
  TORCH_ARG(int64_t, intermediate_size) = 2048;
  TORCH_ARG(int64_t, projection_dim) = 512;
  TORCH_ARG(int64_t, num_hidden_layers) = 12;
  TORCH_ARG(int64_t, num_attention_heads) = 8;
  TORCH_ARG(int64_t, max_position_embeddings) = 77;
  TORCH_ARG(std::string, hidden_act) = "quick_gelu";  ///< quick_gelu | gelu | gelu_new | gelu_pytorch_tanh | relu
  TORCH_ARG(double, layer_norm_eps) = 1e-5;
  TORCH_ARG(int64_t, pad_token_id) = 1;
  TORCH_ARG(int64_t, bos_token_id) = 49406;
  /// 2 selects the legacy pooling (argmax of the ids, i.e. the highest id, which is eos in CLIP's vocabulary).
  TORCH_ARG(int64_t, eos_token_id) = 49407;

};

/// Outputs of the CLIP text models (`hidden_states` only when asked for; `text_embeds` only WithProjection).
struct CLIPTextModelOutput {
  at::Tensor last_hidden_state;            ///< [B, S, H] after final_layer_norm
  at::Tensor pooler_output;                ///< [B, H] last_hidden_state at the eos position
  std::vector<at::Tensor> hidden_states;   ///< num_hidden_layers + 1 tensors [B, S, H]: embeddings, each layer
  at::Tensor text_embeds;                  ///< [B, projection_dim] text_projection(pooler_output)
};

/// token + position embeddings.
class CLIPTextEmbeddingsImpl : public torch::nn::Module {
 public:
  explicit CLIPTextEmbeddingsImpl(const CLIPTextConfig& config);
  /// input_ids [B, S] -> [B, S, H]
  at::Tensor forward(const at::Tensor& input_ids);

  torch::nn::Embedding token_embedding{nullptr}, position_embedding{nullptr};
};
TORCH_MODULE(CLIPTextEmbeddings);

/// Multi-head self-attention with q/k/v/out projections; scores through dispatch_attention (global backend).
class CLIPAttentionImpl : public torch::nn::Module {
 public:
  explicit CLIPAttentionImpl(const CLIPTextConfig& config);
  /// hidden_states [B, S, H], attention_mask additive [B or 1, 1, S, S] -> [B, S, H]
  at::Tensor forward(const at::Tensor& hidden_states, const at::Tensor& attention_mask);

  int64_t num_heads, head_dim;
  double scale;
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr};
};
TORCH_MODULE(CLIPAttention);

/// fc1 -> activation -> fc2.
class CLIPMLPImpl : public torch::nn::Module {
 public:
  explicit CLIPMLPImpl(const CLIPTextConfig& config);
  at::Tensor forward(const at::Tensor& hidden_states);

  std::string hidden_act;
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(CLIPMLP);

/// Pre-norm transformer layer: x + attn(ln1(x)), then x + mlp(ln2(x)).
class CLIPEncoderLayerImpl : public torch::nn::Module {
 public:
  explicit CLIPEncoderLayerImpl(const CLIPTextConfig& config);
  at::Tensor forward(const at::Tensor& hidden_states, const at::Tensor& attention_mask);

  CLIPAttention self_attn{nullptr};
  torch::nn::LayerNorm layer_norm1{nullptr};
  CLIPMLP mlp{nullptr};
  torch::nn::LayerNorm layer_norm2{nullptr};
};
TORCH_MODULE(CLIPEncoderLayer);

/// The stack of encoder layers.
class CLIPEncoderImpl : public torch::nn::Module {
 public:
  explicit CLIPEncoderImpl(const CLIPTextConfig& config);
  /// Returns the last layer's output; appends the input and every layer's output to `all` when given.
  at::Tensor forward(const at::Tensor& inputs_embeds, const at::Tensor& attention_mask,
                     std::vector<at::Tensor>* all = nullptr);

  torch::nn::ModuleList layers{nullptr};
};
TORCH_MODULE(CLIPEncoder);

/// embeddings -> causal encoder -> final_layer_norm -> pooling at eos.
class CLIPTextTransformerImpl : public torch::nn::Module {
 public:
  explicit CLIPTextTransformerImpl(const CLIPTextConfig& config);
  /// input_ids [B, S] int64 (S <= max_position_embeddings); attention_mask [B, S] of 0/1 or undefined.
  CLIPTextModelOutput forward(const at::Tensor& input_ids, const at::Tensor& attention_mask = {},
                              bool output_hidden_states = false);

  CLIPTextConfig config;
  CLIPTextEmbeddings embeddings{nullptr};
  CLIPEncoder encoder{nullptr};
  torch::nn::LayerNorm final_layer_norm{nullptr};
};
TORCH_MODULE(CLIPTextTransformer);

/// transformers' CLIPTextModel (component type "CLIPTextModel").
class CLIPTextModelImpl : public torch::nn::Module, public Component {
 public:
  explicit CLIPTextModelImpl(const CLIPTextConfig& config);
  /// Computes in the parameters' dtype (float32, or bfloat16 for `dtype: bf16`); every output is float32.
  CLIPTextModelOutput forward(const at::Tensor& input_ids, const at::Tensor& attention_mask = {},
                              bool output_hidden_states = false);
  std::string type() const override { return "CLIPTextModel"; }
  size_t nbytes() const override;

  CLIPTextTransformer text_model{nullptr};
};
TORCH_MODULE(CLIPTextModel);

/// transformers' CLIPTextModelWithProjection (component type "CLIPTextModelWithProjection"): also returns
/// text_embeds = text_projection(pooler_output), no bias.
class CLIPTextModelWithProjectionImpl : public torch::nn::Module, public Component {
 public:
  explicit CLIPTextModelWithProjectionImpl(const CLIPTextConfig& config);
  /// Computes in the parameters' dtype; every output is float32 (as CLIPTextModelImpl).
  CLIPTextModelOutput forward(const at::Tensor& input_ids, const at::Tensor& attention_mask = {},
                              bool output_hidden_states = false);
  std::string type() const override { return "CLIPTextModelWithProjection"; }
  size_t nbytes() const override;

  CLIPTextTransformer text_model{nullptr};
  torch::nn::Linear text_projection{nullptr};
};
TORCH_MODULE(CLIPTextModelWithProjection);

/// Builds a CLIPTextModel from `folder/subfolder/config.json` and loads its weights (`model.safetensors`,
/// variant or shards) strictly; a persisted `text_model.embeddings.position_ids` is ignored, as transformers
/// ignores it (positions are always 0..S-1). Evaluation mode. ModelLoadError naming files / tensors.
std::shared_ptr<CLIPTextModelImpl> load_clip_text_model(const std::string& folder, const std::string& subfolder,
                                                        const std::string& variant = {},
                                                        at::ScalarType dtype = at::kFloat);
/// Same for CLIPTextModelWithProjection.
std::shared_ptr<CLIPTextModelWithProjectionImpl> load_clip_text_model_with_projection(
    const std::string& folder, const std::string& subfolder, const std::string& variant = {},
    at::ScalarType dtype = at::kFloat);

/// Registers the component types "CLIPTokenizer" (Tokenizer category), "CLIPTextModel" and
/// "CLIPTextModelWithProjection" (Model category). Specs with `from` load from `from/subfolder`; text models
/// without `from` are built from `config` (random weights, for tests).
void register_clip_text_components(Registry& registry);

}  // namespace tessera
