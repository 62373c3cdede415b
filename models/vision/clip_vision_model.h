#pragma once
/// CLIPVisionModelWithProjection: transformers' CLIP vision tower with its projection head (the IP-Adapter image
/// encoder), submodules registered under the checkpoint keys (`vision_model.embeddings.class_embedding`,
/// `vision_model.pre_layrnorm.weight` (sic), `vision_model.encoder.layers.0.self_attn.q_proj.weight`, …,
/// `visual_projection.weight`). The encoder layers are the text model's CLIPEncoderLayer (no mask here).
///
///   auto enc = CLIPVisionModelWithProjectionImpl::from_pretrained("IP-Adapter/models", "image_encoder");
///   c10::InferenceMode guard;
///   CLIPVisionModelOutput out = enc->forward(pixel_values);          // [B, 3, S, S] from CLIPImageProcessor
///   at::Tensor base = out.image_embeds;                               // IP-Adapter: [B, projection_dim]
///   at::Tensor plus = out.hidden_states[out.hidden_states.size() - 2];  // IP-Adapter Plus: [B, 1 + P, H]
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <memory>
#include <map>
#include <string>
#include <vector>

#include "tessera/components.h"
#include "models/text/clip_text_model.h"

namespace tessera {

class ModelConfig;
class Registry;

/// transformers' CLIPVisionConfig fields with its defaults (ViT-B/32).
struct CLIPVisionConfig {
  /// Reads a config.json (a CLIPVisionConfig; unknown fields are logged by finish()); ModelLoadError on wrong
  /// types or values.
  static CLIPVisionConfig from_config(ModelConfig& config);

  TORCH_ARG(int64_t, hidden_size) = 768;
  TORCH_ARG(int64_t, intermediate_size) = 3072;
  TORCH_ARG(int64_t, projection_dim) = 512;
  TORCH_ARG(int64_t, num_hidden_layers) = 12;
  TORCH_ARG(int64_t, num_attention_heads) = 12;
  TORCH_ARG(int64_t, num_channels) = 3;
  TORCH_ARG(int64_t, image_size) = 224;
  TORCH_ARG(int64_t, patch_size) = 32;
  TORCH_ARG(std::string, hidden_act) = "quick_gelu";  ///< quick_gelu | gelu | gelu_new | gelu_pytorch_tanh | relu
  TORCH_ARG(double, layer_norm_eps) = 1e-5;

 public:  // TORCH_ARG leaves the struct in a private section
  /// (image_size / patch_size)^2 patches + the class token.
  int64_t num_positions() const { return (image_size() / patch_size()) * (image_size() / patch_size()) + 1; }
  /// The encoder-layer fields in the text config the shared CLIPEncoderLayer takes.
  CLIPTextConfig encoder_config() const;
};

/// Outputs of CLIPVisionModelWithProjection.forward (all float32).
struct CLIPVisionModelOutput {
  at::Tensor image_embeds;                ///< [B, projection_dim] visual_projection(post_layernorm(last[:, 0]))
  at::Tensor last_hidden_state;           ///< [B, 1 + P, H] the last layer's output (no post_layernorm)
  at::Tensor pooler_output;               ///< [B, H] post_layernorm(last_hidden_state[:, 0])
  /// num_hidden_layers + 1 tensors [B, 1 + P, H]: pre_layrnorm(embeddings), then each layer's output (as
  /// transformers' output_hidden_states=True; hidden_states[-2] is what IP-Adapter Plus consumes).
  std::vector<at::Tensor> hidden_states;
};

/// class token + patch embedding (conv, kernel = stride = patch_size, no bias) + position embedding.
class CLIPVisionEmbeddingsImpl : public torch::nn::Module {
 public:
  explicit CLIPVisionEmbeddingsImpl(const CLIPVisionConfig& config);
  /// pixel_values [B, C, S, S] -> [B, 1 + P, H]
  at::Tensor forward(const at::Tensor& pixel_values);

  at::Tensor class_embedding;  ///< [H]
  torch::nn::Conv2d patch_embedding{nullptr};
  torch::nn::Embedding position_embedding{nullptr};
};
TORCH_MODULE(CLIPVisionEmbeddings);

/// embeddings -> pre_layrnorm -> encoder (no mask) -> post_layernorm of the class token.
class CLIPVisionTransformerImpl : public torch::nn::Module {
 public:
  explicit CLIPVisionTransformerImpl(const CLIPVisionConfig& config);
  /// pixel_values [B, num_channels, image_size, image_size] (no position interpolation: other sizes are an
  /// InputError, as transformers raises without interpolate_pos_encoding).
  CLIPVisionModelOutput forward(const at::Tensor& pixel_values, bool output_hidden_states = true);

  CLIPVisionConfig config;
  CLIPVisionEmbeddings embeddings{nullptr};
  torch::nn::LayerNorm pre_layrnorm{nullptr};
  CLIPEncoder encoder{nullptr};
  torch::nn::LayerNorm post_layernorm{nullptr};
};
TORCH_MODULE(CLIPVisionTransformer);

/// transformers' CLIPVisionModelWithProjection (component type "CLIPVisionModelWithProjection").
class CLIPVisionModelWithProjectionImpl : public torch::nn::Module, public Component {
 public:
  explicit CLIPVisionModelWithProjectionImpl(CLIPVisionConfig config);

  /// Builds the model from `folder/subfolder/config.json` and loads `model.safetensors` (or its shards) strictly;
  /// a persisted `vision_model.embeddings.position_ids` is ignored, as transformers ignores it. Evaluation mode.
  static std::shared_ptr<CLIPVisionModelWithProjectionImpl> from_pretrained(const std::string& folder,
                                                                            const std::string& subfolder = {},
                                                                            at::ScalarType dtype = at::kFloat);

  /// One .safetensors file in transformers' key names without a config.json (ComfyUI's models/clip_vision/*):
  /// the config from clip_vision_config_from_weights, loaded strictly. Evaluation mode.
  static std::shared_ptr<CLIPVisionModelWithProjectionImpl> from_file(const std::string& file,
                                                                      at::ScalarType dtype = at::kFloat);

  /// Computes in the parameters' dtype; every output is float32. hidden_states is filled only when
  /// output_hidden_states (the default, since IP-Adapter Plus needs the penultimate one).
  CLIPVisionModelOutput forward(const at::Tensor& pixel_values, bool output_hidden_states = true);

  at::ScalarType dtype() const { return visual_projection->weight.scalar_type(); }
  std::string type() const override { return "CLIPVisionModelWithProjection"; }
  size_t nbytes() const override;

  CLIPVisionTransformer vision_model{nullptr};
  torch::nn::Linear visual_projection{nullptr};
};
TORCH_MODULE(CLIPVisionModelWithProjection);

/// The config of a CLIP vision encoder from its weights (transformers' names, `vision_model.` prefix): hidden size
/// (class_embedding), layers (encoder.layers.N), patch size and channels (patch_embedding), image size (the
/// position embedding's rows = (image / patch)^2 + 1), MLP width (fc1), projection (visual_projection). Heads and
/// activation are not in the weights: they come from the published encoder of that width (1024: OpenAI ViT-L/14,
/// 16 heads, quick_gelu; 1280: OpenCLIP ViT-H/14, 16 heads, gelu; 1664: OpenCLIP ViT-bigG/14, 16 heads, gelu).
/// ModelLoadError naming `file` for a missing key or another width (then give a folder with its config.json).
CLIPVisionConfig clip_vision_config_from_weights(const std::map<std::string, at::Tensor>& tensors,
                                                 const std::string& file);

/// Registers the "CLIPVisionModelWithProjection" component type (Model category): with `from`, loaded from
/// from/subfolder (config.json + model.safetensors); without, built from `config` (random weights, for tests).
void register_clip_vision_model(Registry& registry);

}  // namespace tessera
