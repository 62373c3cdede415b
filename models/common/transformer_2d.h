#pragma once
/// diffusers' Transformer2DModel (continuous input, as used inside UNet2DConditionModel) with its parts:
/// Attention + swappable attention processors (attention_processor.py) and BasicTransformerBlock
/// (attention.py; its FeedForward is in models/common/feed_forward.h). Submodules are registered under diffusers' state-dict keys
/// (norm, proj_in, transformer_blocks.K.{norm1,attn1,norm2,attn2,norm3,ff}, proj_out; attnN.to_q/to_k/to_v/to_out.0;
/// ff.net.0.proj, ff.net.2).
///
/// Guiders' layer hooks (guiders/layer_hooks.h) are honoured per batch slice: a block knows its stack name
/// (e.g. "mid_block.attentions.0.transformer_blocks") and index, picks the hooks that select it, and its
/// self-attention processor applies IdentityAttention (PAG), SkipAttention, SmoothedEnergyBlur (SEG);
/// the block applies SkipFeedForward and SkipBlock (SLG).
///
///   Transformer2DModel t(Transformer2DModelOptions(8, 40, 320).cross_attention_dim(768));
///   at::Tensor y = t(x, encoder_hidden_states, {});  // x [B, 320, h, w] → [B, 320, h, w]
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "guiders/layer_hooks.h"
#include "models/common/attention_dispatch.h"
#include "models/common/feed_forward.h"

namespace tessera {

/// Where a transformer block sits, for layer hooks: the hooks of the current call, the block's stack name and
/// its index in that stack. `hooks` may be null (no hooks).
struct HookSite {
  const std::vector<LayerHook>* hooks = nullptr;
  std::string stack_fqn;
  int64_t index = 0;
  bool stack_is_primary = false;
  /// IP-Adapter image tokens of the current call (UNet2DConditionInputs::ip_hidden_states after the UNet's
  /// checks: one [B, tokens, cross] tensor per installed adapter, in the compute dtype), or null when the call has
  /// none. It travels with the hooks because it is per call, like them; it is not a hook. Transformer blocks hand
  /// it to their cross-attention (attn2) only; only IPAdapterAttnProcessor (models/adapters/ip_adapter_unet.h)
  /// reads it, every other processor ignores it.
  const std::vector<at::Tensor>* ip_hidden_states = nullptr;
  /// Hooks of `kind` that select this block.
  std::vector<const LayerHook*> select(LayerHookKind kind) const;
};

class AttentionImpl;

/// An attention processor: what an Attention module computes. Processors are per module and can be swapped
/// (Attention::set_processor), e.g. to PAGIdentitySelfAttnProcessor for chosen layers.
class AttentionProcessor {
 public:
  virtual ~AttentionProcessor() = default;
  /// diffusers' class name ("AttnProcessor2_0", …).
  virtual std::string name() const = 0;
  /// hidden_states [B, N, C]; encoder_hidden_states [B, M, Cc] or undefined (self-attention); attention_mask
  /// broadcastable to [B, heads, N, M] or undefined. `hooks` are the hooks that select this module's block (the
  /// module applies only attention-level kinds, and only when it is a self-attention).
  virtual at::Tensor forward(AttentionImpl& attn, const at::Tensor& hidden_states,
                             const at::Tensor& encoder_hidden_states, const at::Tensor& attention_mask,
                             const HookSite& hooks) = 0;
};

/// The attention step of AttnProcessor2_0 on already projected query [B, N, inner] and key/value [B, M, inner]:
/// split into attn.heads heads, q/k in float32 when attn.options.upcast_attention() (and the dtype is not float32),
/// dispatch_attention(…, attention_mask, attn.scale, backend) → [B, N, inner] in the query's dtype. Shared with
/// other processors (IPAdapterAttnProcessor) so that their text attention is bit-identical to AttnProcessor2_0's.
at::Tensor multi_head_attention(AttentionImpl& attn, const at::Tensor& query, const at::Tensor& key,
                                const at::Tensor& value, const at::Tensor& attention_mask, AttentionBackend backend);

/// diffusers' AttnProcessor2_0: q/k/v projections, scaled dot-product attention through dispatch_attention,
/// output projection. Honours IdentityAttention (output = to_out(to_v(x)) on the hook's rows),
/// SmoothedEnergyBlur (query blurred on the hook's rows) and SkipAttention (output = input on the rows).
class AttnProcessor2_0 : public AttentionProcessor {
 public:
  explicit AttnProcessor2_0(AttentionBackend backend = AttentionBackend::Auto) : backend_(backend) {}
  std::string name() const override { return "AttnProcessor2_0"; }
  at::Tensor forward(AttentionImpl& attn, const at::Tensor& hidden_states, const at::Tensor& encoder_hidden_states,
                     const at::Tensor& attention_mask, const HookSite& hooks) override;

 private:
  AttentionBackend backend_;
};

/// diffusers' PAGIdentitySelfAttnProcessor2_0 / PAGCFGIdentitySelfAttnProcessor2_0: the batch holds
/// `num_chunks` equal parts (2: [cond, perturbed]; 3: [uncond, cond, perturbed]); the last part gets identity
/// attention (to_out(to_v(x))), the others normal attention.
class PAGIdentitySelfAttnProcessor : public AttentionProcessor {
 public:
  explicit PAGIdentitySelfAttnProcessor(int64_t num_chunks = 2, AttentionBackend backend = AttentionBackend::Auto)
      : num_chunks_(num_chunks), inner_(backend) {}
  std::string name() const override {
    return num_chunks_ == 3 ? "PAGCFGIdentitySelfAttnProcessor2_0" : "PAGIdentitySelfAttnProcessor2_0";
  }
  at::Tensor forward(AttentionImpl& attn, const at::Tensor& hidden_states, const at::Tensor& encoder_hidden_states,
                     const at::Tensor& attention_mask, const HookSite& hooks) override;

 private:
  int64_t num_chunks_;
  AttnProcessor2_0 inner_;
};

/// Options of diffusers' Attention (the subset UNets use).
struct AttentionOptions {
  explicit AttentionOptions(int64_t query_dim) : query_dim_(query_dim) {}
  TORCH_ARG(int64_t, query_dim);
  TORCH_ARG(std::optional<int64_t>, cross_attention_dim) = std::nullopt;  ///< set: cross-attention
  TORCH_ARG(int64_t, heads) = 8;
  TORCH_ARG(int64_t, dim_head) = 64;
  TORCH_ARG(bool, bias) = false;      ///< to_q/to_k/to_v bias
  TORCH_ARG(bool, out_bias) = true;   ///< to_out.0 bias
  TORCH_ARG(bool, upcast_attention) = false;
  TORCH_ARG(std::optional<int64_t>, out_dim) = std::nullopt;
};

/// diffusers' Attention module: to_q, to_k, to_v, to_out.0 (to_out.1 is a parameterless dropout), and a processor.
class AttentionImpl : public torch::nn::Module {
 public:
  explicit AttentionImpl(AttentionOptions options);
  /// [B, N, query_dim] → [B, N, out_dim].
  at::Tensor forward(const at::Tensor& hidden_states, const at::Tensor& encoder_hidden_states = {},
                     const at::Tensor& attention_mask = {}, const HookSite& hooks = {});

  void set_processor(std::shared_ptr<AttentionProcessor> processor) { processor_ = std::move(processor); }
  const std::shared_ptr<AttentionProcessor>& processor() const { return processor_; }
  bool is_cross_attention() const { return options.cross_attention_dim().has_value(); }
  /// Output projection (to_out.0; the dropout to_out.1 is the identity at inference).
  at::Tensor out_projection(const at::Tensor& x) { return to_out_0->forward(x); }

  AttentionOptions options;
  int64_t heads = 0;
  double scale = 0.0;
  torch::nn::Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr}, to_out_0{nullptr};
  torch::nn::ModuleList to_out{nullptr};

 private:
  std::shared_ptr<AttentionProcessor> processor_;
};
TORCH_MODULE(Attention);

/// Options of diffusers' BasicTransformerBlock (norm_type "layer_norm", activation "geglu").
struct BasicTransformerBlockOptions {
  BasicTransformerBlockOptions(int64_t dim, int64_t num_attention_heads, int64_t attention_head_dim)
      : dim_(dim), num_attention_heads_(num_attention_heads), attention_head_dim_(attention_head_dim) {}
  TORCH_ARG(int64_t, dim);
  TORCH_ARG(int64_t, num_attention_heads);
  TORCH_ARG(int64_t, attention_head_dim);
  TORCH_ARG(std::optional<int64_t>, cross_attention_dim) = std::nullopt;
  TORCH_ARG(bool, attention_bias) = false;
  TORCH_ARG(bool, only_cross_attention) = false;
  TORCH_ARG(bool, double_self_attention) = false;
  TORCH_ARG(bool, upcast_attention) = false;
  TORCH_ARG(double, norm_eps) = 1e-5;
  TORCH_ARG(bool, norm_elementwise_affine) = true;
};

/// diffusers' BasicTransformerBlock: self-attention, cross-attention, GEGLU feed-forward, each pre-norm + residual.
class BasicTransformerBlockImpl : public torch::nn::Module {
 public:
  explicit BasicTransformerBlockImpl(BasicTransformerBlockOptions options);
  /// hidden_states [B, N, dim], encoder_hidden_states [B, M, cross_attention_dim] → [B, N, dim]. Layer hooks go to
  /// attn1 (and the block's own skips); attn2 gets no hooks, only hooks.ip_hidden_states.
  at::Tensor forward(const at::Tensor& hidden_states, const at::Tensor& encoder_hidden_states,
                     const HookSite& hooks = {});

  BasicTransformerBlockOptions options;
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr}, norm3{nullptr};
  Attention attn1{nullptr}, attn2{nullptr};
  FeedForward ff{nullptr};
};
TORCH_MODULE(BasicTransformerBlock);

/// Options of diffusers' Transformer2DModel for continuous (latent image) input.
struct Transformer2DModelOptions {
  Transformer2DModelOptions(int64_t num_attention_heads, int64_t attention_head_dim, int64_t in_channels)
      : num_attention_heads_(num_attention_heads), attention_head_dim_(attention_head_dim), in_channels_(in_channels) {}
  TORCH_ARG(int64_t, num_attention_heads);
  TORCH_ARG(int64_t, attention_head_dim);
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, num_layers) = 1;
  TORCH_ARG(std::optional<int64_t>, cross_attention_dim) = std::nullopt;
  TORCH_ARG(int64_t, norm_num_groups) = 32;
  TORCH_ARG(bool, use_linear_projection) = false;
  TORCH_ARG(bool, only_cross_attention) = false;
  TORCH_ARG(bool, double_self_attention) = false;
  TORCH_ARG(bool, upcast_attention) = false;
  TORCH_ARG(bool, attention_bias) = false;
};

/// diffusers' Transformer2DModel (continuous): GroupNorm, proj_in (1×1 conv or linear), transformer_blocks,
/// proj_out, residual.
class Transformer2DModelImpl : public torch::nn::Module {
 public:
  explicit Transformer2DModelImpl(Transformer2DModelOptions options);
  /// hidden_states [B, C, H, W] → [B, C, H, W]. `hooks` may be null. `ip_hidden_states` (may be null): the call's
  /// IP-Adapter tokens, handed to every block's attn2 through HookSite::ip_hidden_states.
  at::Tensor forward(const at::Tensor& hidden_states, const at::Tensor& encoder_hidden_states,
                     const std::vector<LayerHook>* hooks = nullptr,
                     const std::vector<at::Tensor>* ip_hidden_states = nullptr);

  /// Name of this model's block stack for layer hooks ("<path>.transformer_blocks"); set by the owning model.
  std::string stack_fqn = "transformer_blocks";
  bool stack_is_primary = true;

  Transformer2DModelOptions options;
  torch::nn::GroupNorm norm{nullptr};
  torch::nn::Conv2d proj_in_conv{nullptr}, proj_out_conv{nullptr};
  torch::nn::Linear proj_in_linear{nullptr}, proj_out_linear{nullptr};
  torch::nn::ModuleList transformer_blocks{nullptr};
};
TORCH_MODULE(Transformer2DModel);

}  // namespace tessera
