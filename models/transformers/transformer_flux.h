#pragma once
/// diffusers' FluxTransformer2DModel (models/transformers/transformer_flux.py) for FLUX.1 schnell and dev:
/// config.json with diffusers' field names and defaults, submodules under the state-dict keys (pos_embed (no
/// weights), time_text_embed, context_embedder, x_embedder, transformer_blocks.N, single_transformer_blocks.N,
/// norm_out, proj_out), FluxAttention with a swappable FluxAttnProcessor that ends in dispatch_attention, strict
/// loading from a diffusers folder, and guiders' layer hooks applied per batch slice.
///
///   auto flux = create_diffusers_model<FluxTransformer2DModelImpl, FluxTransformer2DModelConfig>(spec);
///   at::Tensor v = model->forward(latents, prompt_embeds, pooled, t / 1000, img_ids, txt_ids);  // [B, S_img, p²·out]
///
/// Layer hooks: stacks "transformer_blocks" (double stream; the "auto" stack) and "single_transformer_blocks".
/// SkipBlock leaves both streams unchanged, SkipAttention replaces each stream's attention output with that
/// stream's attention input, SkipFeedForward replaces ff / ff_context outputs with their inputs (single blocks
/// have no FeedForward module, so it does nothing there, as in diffusers), IdentityAttention makes the joint
/// attention return its value, SmoothedEnergyBlur blurs the to_q output. See the .cpp for where this departs from
/// diffusers' hook code (which swaps the two streams on a skipped Flux block).
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
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
#include "models/common/attention_dispatch.h"
#include "models/common/embeddings.h"
#include "models/common/feed_forward.h"
#include "models/common/normalization.h"
#include "models/common/rotary_embedding.h"
#include "models/common/transformer_2d.h"  // HookSite

namespace tessera {

class Registry;
class ModelConfig;

/// The FluxTransformer2DModel config (diffusers' field names and defaults; FLUX.1-dev/schnell use the defaults
/// except guidance_embeds).
struct FluxTransformer2DModelConfig {
  int64_t patch_size = 1;
  int64_t in_channels = 64;
  std::optional<int64_t> out_channels;  ///< null: in_channels
  int64_t num_layers = 19;
  int64_t num_single_layers = 38;
  int64_t attention_head_dim = 128;
  int64_t num_attention_heads = 24;
  int64_t joint_attention_dim = 4096;
  int64_t pooled_projection_dim = 768;
  bool guidance_embeds = false;
  std::vector<int64_t> axes_dims_rope = {16, 56, 56};

  int64_t inner_dim() const { return num_attention_heads * attention_head_dim; }
  int64_t resolved_out_channels() const { return out_channels.value_or(in_channels); }

  /// Reads a config.json; ModelLoadError naming the field for a wrong type or a value Tessera does not support
  /// (non-positive sizes, odd RoPE axes, axes_dims_rope not summing to attention_head_dim).
  static FluxTransformer2DModelConfig from_config(ModelConfig& config);
  static FluxTransformer2DModelConfig from_json(const nlohmann::json& json, const std::string& source = "config");
};

/// Options of diffusers' FluxAttention (the arguments FLUX's blocks use).
struct FluxAttentionOptions {
  explicit FluxAttentionOptions(int64_t query_dim) : query_dim_(query_dim) {}
  TORCH_ARG(int64_t, query_dim);
  TORCH_ARG(int64_t, heads) = 8;
  TORCH_ARG(int64_t, dim_head) = 64;
  TORCH_ARG(bool, bias) = false;
  TORCH_ARG(std::optional<int64_t>, added_kv_proj_dim) = std::nullopt;  ///< set: joint (double-stream) attention
  TORCH_ARG(bool, added_proj_bias) = true;
  TORCH_ARG(bool, out_bias) = true;
  TORCH_ARG(double, eps) = 1e-5;
  TORCH_ARG(std::optional<int64_t>, out_dim) = std::nullopt;
  TORCH_ARG(bool, pre_only) = false;  ///< no to_out (single-stream blocks)
  TORCH_ARG(bool, elementwise_affine) = true;
};

class FluxAttentionImpl;

/// What a FluxAttention computes; swappable per module (FluxAttentionImpl::set_processor).
class FluxAttentionProcessor {
 public:
  virtual ~FluxAttentionProcessor() = default;
  /// diffusers' class name.
  virtual std::string name() const = 0;
  /// hidden_states [B, S, D]; encoder_hidden_states [B, S_txt, D] (joint attention) or undefined (single stream,
  /// where hidden_states already holds [txt, img]); image_rotary_emb (cos, sin) [S_txt + S_img, head_dim].
  /// Returns (hidden_states out, encoder_hidden_states out or undefined). `hooks`: the hooks that select this
  /// module's block.
  virtual std::pair<at::Tensor, at::Tensor> forward(FluxAttentionImpl& attn, const at::Tensor& hidden_states,
                                                    const at::Tensor& encoder_hidden_states,
                                                    const std::pair<at::Tensor, at::Tensor>& image_rotary_emb,
                                                    const HookSite& hooks) = 0;
};

/// diffusers' FluxAttnProcessor: q/k/v → [B, S, H, Dh], qk RMSNorm (torch flavour), text first in the joint
/// sequence, RoPE, dispatch_attention, split, to_out.0 / to_add_out. Honours IdentityAttention,
/// SmoothedEnergyBlur and SkipAttention on the hooks' rows.
class FluxAttnProcessor : public FluxAttentionProcessor {
 public:
  explicit FluxAttnProcessor(AttentionBackend backend = AttentionBackend::Auto) : backend_(backend) {}
  std::string name() const override { return "FluxAttnProcessor"; }
  std::pair<at::Tensor, at::Tensor> forward(FluxAttentionImpl& attn, const at::Tensor& hidden_states,
                                            const at::Tensor& encoder_hidden_states,
                                            const std::pair<at::Tensor, at::Tensor>& image_rotary_emb,
                                            const HookSite& hooks) override;

 private:
  AttentionBackend backend_;
};

/// diffusers' FluxAttention: norm_q, norm_k, to_q, to_k, to_v, [to_out.0], [norm_added_q, norm_added_k,
/// add_q_proj, add_k_proj, add_v_proj, to_add_out], and a processor.
class FluxAttentionImpl : public torch::nn::Module {
 public:
  explicit FluxAttentionImpl(FluxAttentionOptions options);
  std::pair<at::Tensor, at::Tensor> forward(const at::Tensor& hidden_states, const at::Tensor& encoder_hidden_states,
                                            const std::pair<at::Tensor, at::Tensor>& image_rotary_emb,
                                            const HookSite& hooks = {});
  void set_processor(std::shared_ptr<FluxAttentionProcessor> processor) { processor_ = std::move(processor); }
  const std::shared_ptr<FluxAttentionProcessor>& processor() const { return processor_; }

  FluxAttentionOptions options;
  int64_t head_dim = 0, inner_dim = 0, heads = 0;
  RMSNorm norm_q{nullptr}, norm_k{nullptr}, norm_added_q{nullptr}, norm_added_k{nullptr};
  torch::nn::Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr}, to_out_0{nullptr};
  torch::nn::ModuleList to_out{nullptr};
  torch::nn::Linear add_q_proj{nullptr}, add_k_proj{nullptr}, add_v_proj{nullptr}, to_add_out{nullptr};

 private:
  std::shared_ptr<FluxAttentionProcessor> processor_;
};
TORCH_MODULE(FluxAttention);

/// diffusers' FluxTransformerBlock (double stream, MMDiT): norm1 / norm1_context (AdaLayerNormZero), joint attn,
/// norm2 / norm2_context (LayerNorm, no affine), ff / ff_context (FeedForward gelu-approximate); gated residuals.
class FluxTransformerBlockImpl : public torch::nn::Module {
 public:
  FluxTransformerBlockImpl(int64_t dim, int64_t num_attention_heads, int64_t attention_head_dim, double eps = 1e-6);
  /// hidden_states [B, S_img, D], encoder_hidden_states [B, S_txt, D], temb [B, D] →
  /// (encoder_hidden_states, hidden_states), diffusers' return order.
  std::pair<at::Tensor, at::Tensor> forward(const at::Tensor& hidden_states, const at::Tensor& encoder_hidden_states,
                                            const at::Tensor& temb,
                                            const std::pair<at::Tensor, at::Tensor>& image_rotary_emb,
                                            const HookSite& hooks = {});

  AdaLayerNormZero norm1{nullptr}, norm1_context{nullptr};
  FluxAttention attn{nullptr};
  torch::nn::LayerNorm norm2{nullptr}, norm2_context{nullptr};
  FeedForward ff{nullptr}, ff_context{nullptr};
};
TORCH_MODULE(FluxTransformerBlock);

/// diffusers' FluxSingleTransformerBlock: on cat([txt, img]): norm (AdaLayerNormZeroSingle), attn (pre_only) in
/// parallel with proj_mlp + tanh-GELU, proj_out over cat([attn, mlp]), gated residual; split back at S_txt.
class FluxSingleTransformerBlockImpl : public torch::nn::Module {
 public:
  FluxSingleTransformerBlockImpl(int64_t dim, int64_t num_attention_heads, int64_t attention_head_dim,
                                 double mlp_ratio = 4.0);
  /// Same contract as FluxTransformerBlockImpl::forward.
  std::pair<at::Tensor, at::Tensor> forward(const at::Tensor& hidden_states, const at::Tensor& encoder_hidden_states,
                                            const at::Tensor& temb,
                                            const std::pair<at::Tensor, at::Tensor>& image_rotary_emb,
                                            const HookSite& hooks = {});

  int64_t mlp_hidden_dim = 0;
  AdaLayerNormZeroSingle norm{nullptr};
  torch::nn::Linear proj_mlp{nullptr};
  torch::nn::Linear proj_out{nullptr};
  FluxAttention attn{nullptr};
};
TORCH_MODULE(FluxSingleTransformerBlock);

/// Inputs beyond the tensors of diffusers' forward.
struct FluxTransformerInputs {
  /// Layer hooks of guiders (SLG, PAG, SEG…), each for its batch slice; stacks "transformer_blocks" (the "auto"
  /// stack) and "single_transformer_blocks".
  std::vector<LayerHook> hooks;
};

/// diffusers' FluxTransformer2DModel; also the "FluxTransformer2DModel" component.
class FluxTransformer2DModelImpl : public torch::nn::Module, public Component {
 public:
  explicit FluxTransformer2DModelImpl(FluxTransformer2DModelConfig config);

  /// Builds the model from `folder/subfolder/config.json` (with `config_overrides`) and loads the weights strictly
  /// (variant e.g. "fp16"; sharded checkpoints through their index; tensors converted to `dtype`). Eval mode.
  static std::shared_ptr<FluxTransformer2DModelImpl> from_pretrained(const std::string& folder,
                                                                     const std::string& subfolder = "transformer",
                                                                     const std::string& variant = {},
                                                                     const nlohmann::json& config_overrides = {},
                                                                     at::ScalarType dtype = at::kFloat);

  /// hidden_states [B, S_img, in_channels] (packed latents), encoder_hidden_states [B, S_txt, joint_attention_dim],
  /// pooled_projections [B, pooled_projection_dim], timestep [B] (or one value for all rows; the pipeline's t/1000 —
  /// cast to the compute dtype, then ×1000, as diffusers), img_ids [S_img, n_axes], txt_ids [S_txt, n_axes],
  /// guidance [B] (raw scale, ×1000 inside) exactly when config.guidance_embeds, else undefined.
  /// → [B, S_img, patch_size² · out_channels], float32. Floating inputs of any dtype are cast to dtype().
  /// Shapes are checked first (check_inputs); no tensor values are read.
  at::Tensor forward(const at::Tensor& hidden_states, const at::Tensor& encoder_hidden_states,
                     const at::Tensor& pooled_projections, const at::Tensor& timestep, const at::Tensor& img_ids,
                     const at::Tensor& txt_ids, const at::Tensor& guidance = {},
                     const FluxTransformerInputs& inputs = {});

  /// InputError naming the tensor, the expected and the found shape for every shape forward would not accept,
  /// and ValidationError for hooks naming an unknown stack or an out-of-range block. Reads shapes only.
  void check_inputs(const at::Tensor& hidden_states, const at::Tensor& encoder_hidden_states,
                    const at::Tensor& pooled_projections, const at::Tensor& timestep, const at::Tensor& img_ids,
                    const at::Tensor& txt_ids, const at::Tensor& guidance,
                    const FluxTransformerInputs& inputs = {}) const;

  /// The block stacks that layer hooks can name, with their lengths:
  /// {"transformer_blocks", num_layers}, {"single_transformer_blocks", num_single_layers}.
  std::vector<std::pair<std::string, int64_t>> hook_stacks() const;
  /// Sets the processor of every FluxAttention whose name (e.g. "single_transformer_blocks.0.attn") matches the
  /// ECMAScript regex; returns how many were set. `make` gives a fresh processor per module.
  int set_attn_processor(const std::string& name_regex,
                         const std::function<std::shared_ptr<FluxAttentionProcessor>()>& make);

  /// The compute dtype (the parameters': float32, or bfloat16 for `dtype: bf16`).
  at::ScalarType dtype() const { return x_embedder->weight.scalar_type(); }

  std::string type() const override { return "FluxTransformer2DModel"; }
  size_t nbytes() const override;

  FluxTransformer2DModelConfig config;
  FluxPosEmbed pos_embed{nullptr};
  CombinedTimestepTextProjEmbeddings time_text_embed{nullptr};                  ///< guidance_embeds false
  CombinedTimestepGuidanceTextProjEmbeddings time_text_embed_guidance{nullptr};  ///< guidance_embeds true (key time_text_embed)
  torch::nn::Linear context_embedder{nullptr}, x_embedder{nullptr};
  torch::nn::ModuleList transformer_blocks{nullptr}, single_transformer_blocks{nullptr};
  AdaLayerNormContinuous norm_out{nullptr};
  torch::nn::Linear proj_out{nullptr};

 private:
  void validate_hooks(const std::vector<LayerHook>& hooks) const;
};
TORCH_MODULE(FluxTransformer2DModel);

/// Registers the "FluxTransformer2DModel" component type (from_pretrained: folder/subfolder/variant, config
/// overrides, dtype; from_config: random weights from the spec's config).
void register_transformer_flux(Registry& registry);

}  // namespace tessera
