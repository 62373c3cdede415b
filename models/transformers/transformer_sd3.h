#pragma once
/// diffusers' SD3Transformer2DModel (models/transformers/transformer_sd3.py) for Stable Diffusion 3 / 3.5:
/// config.json with diffusers' field names and defaults, submodules under the state-dict keys (pos_embed.proj,
/// pos_embed.pos_embed, time_text_embed.{timestep_embedder,text_embedder}, context_embedder,
/// transformer_blocks.N, norm_out.linear, proj_out), strict loading from a diffusers folder, diffusers'
/// `skip_layers`, and guiders' layer hooks applied per batch slice on the stack "transformer_blocks".
///
///   auto t = SD3Transformer2DModelImpl::from_pretrained("tiny-sd3", "transformer");
///   at::Tensor v = t->forward(latents, prompt_embeds, pooled_prompt_embeds, sigmas * 1000);  // [B, 16, h, w]
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "tessera/components.h"
#include "guiders/layer_hooks.h"
#include "models/common/embeddings.h"
#include "models/common/normalization.h"
#include "models/common/patch_embed.h"

namespace tessera {

class Registry;
class ModelConfig;
class JointAttentionProcessor;

/// The SD3Transformer2DModel config (diffusers' field names and defaults: SD3-medium's, except that SD3.5 sets
/// dual_attention_layers and qk_norm "rms_norm").
struct SD3Transformer2DModelConfig {
  int64_t sample_size = 128;
  int64_t patch_size = 2;
  int64_t in_channels = 16;
  int64_t num_layers = 18;
  int64_t attention_head_dim = 64;
  int64_t num_attention_heads = 18;
  int64_t joint_attention_dim = 4096;
  int64_t caption_projection_dim = 1152;
  int64_t pooled_projection_dim = 2048;
  int64_t out_channels = 16;                 ///< null in config.json means in_channels
  int64_t pos_embed_max_size = 96;           ///< null is refused (the resized table is not supported)
  std::vector<int64_t> dual_attention_layers;  ///< blocks with SD3.5's extra image self-attention (attn2)
  std::optional<std::string> qk_norm;        ///< null or "rms_norm"

  int64_t inner_dim() const { return num_attention_heads * attention_head_dim; }

  /// Reads a config.json; ModelLoadError naming the field for a wrong type or an unsupported value (qk_norm
  /// other than null / "rms_norm", caption_projection_dim != heads * head_dim, null pos_embed_max_size,
  /// dual_attention_layers outside [0, num_layers), non-positive sizes).
  static SD3Transformer2DModelConfig from_config(ModelConfig& config);
  static SD3Transformer2DModelConfig from_json(const nlohmann::json& json, const std::string& source = "config");
};

/// Inputs beyond hidden_states / encoder_hidden_states / pooled_projections / timestep.
struct SD3TransformerInputs {
  /// diffusers' `skip_layers`: these blocks are not run at all, for the whole batch (SD3's own SLG).
  std::vector<int64_t> skip_layers;
  /// Layer hooks of guiders (SLG, PAG, AutoGuidance…), each for its batch slice, on the stack
  /// "transformer_blocks" ("auto" names it too). SmoothedEnergyBlur hooks are refused (ValidationError).
  std::vector<LayerHook> hooks;
  /// diffusers' block_controlnet_hidden_states (SD3 ControlNet): [B, N, inner_dim] each, added to the image
  /// stream after every non-context_pre_only block i, residual int(i / (num_layers / count)).
  std::vector<at::Tensor> block_controlnet_hidden_states;
};

/// diffusers' SD3Transformer2DModel; also the "SD3Transformer2DModel" component.
class SD3Transformer2DModelImpl : public torch::nn::Module, public Component {
 public:
  explicit SD3Transformer2DModelImpl(SD3Transformer2DModelConfig config);

  /// Builds the model from `folder/subfolder/config.json` (with `config_overrides`) and loads the weights strictly
  /// (variant e.g. "fp16"; tensors converted to `dtype`). Returns it in eval mode.
  static std::shared_ptr<SD3Transformer2DModelImpl> from_pretrained(const std::string& folder,
                                                                    const std::string& subfolder = "transformer",
                                                                    const std::string& variant = {},
                                                                    const nlohmann::json& config_overrides = {},
                                                                    at::ScalarType dtype = at::kFloat);

  /// hidden_states [B, in_channels, H, W] (unpacked latents, H and W multiples of patch_size, H/p and W/p at most
  /// pos_embed_max_size); encoder_hidden_states [B, S, joint_attention_dim]; pooled_projections
  /// [B, pooled_projection_dim]; timestep [B] or a scalar (broadcast), used as given (the pipelines pass
  /// sigma * 1000) → [B, out_channels, H, W]. Floating inputs may have any dtype (cast to dtype()); the output is
  /// float32 (models/common/precision.h). Wrong shapes are InputErrors, bad hooks ValidationErrors.
  at::Tensor forward(const at::Tensor& hidden_states, const at::Tensor& encoder_hidden_states,
                     const at::Tensor& pooled_projections, const at::Tensor& timestep,
                     const SD3TransformerInputs& inputs = {});

  /// The block stacks that layer hooks can name: {"transformer_blocks", num_layers}.
  std::vector<std::pair<std::string, int64_t>> hook_stacks() const;
  /// Sets the processor of every attention module whose name ("transformer_blocks.0.attn",
  /// "transformer_blocks.0.attn2") matches the ECMAScript regex; returns how many were set.
  int set_attn_processor(const std::string& name_regex,
                         const std::function<std::shared_ptr<JointAttentionProcessor>()>& make);

  /// The compute dtype: the parameters' (float32, or bfloat16 for `dtype: bf16`).
  at::ScalarType dtype() const { return proj_out->weight.scalar_type(); }

  std::string type() const override { return "SD3Transformer2DModel"; }
  size_t nbytes() const override;

  SD3Transformer2DModelConfig config;
  PatchEmbed pos_embed{nullptr};
  CombinedTimestepTextProjEmbeddings time_text_embed{nullptr};
  torch::nn::Linear context_embedder{nullptr};
  torch::nn::ModuleList transformer_blocks{nullptr};  ///< JointTransformerBlock; the last is context_pre_only
  AdaLayerNormContinuous norm_out{nullptr};
  torch::nn::Linear proj_out{nullptr};

 private:
  void validate_inputs(const at::Tensor& hidden_states, const at::Tensor& encoder_hidden_states,
                       const at::Tensor& pooled_projections, const at::Tensor& timestep,
                       const SD3TransformerInputs& inputs) const;
};
TORCH_MODULE(SD3Transformer2DModel);

/// Registers the "SD3Transformer2DModel" component type (from_pretrained: folder/subfolder/variant, config
/// overrides; from_config: random weights from the spec's config).
void register_transformer_sd3(Registry& registry);

}  // namespace tessera
