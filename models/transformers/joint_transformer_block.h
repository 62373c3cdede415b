#pragma once
/// diffusers' JointTransformerBlock (models/attention.py), the MMDiT block of SD3 / SD3.5 (and of the SD3
/// ControlNet), with its Attention module and JointAttnProcessor2_0 (models/attention_processor.py).
/// Submodules under diffusers' state-dict keys: norm1 (AdaLayerNormZero, or SD35AdaLayerNormZeroX with dual
/// attention), norm1_context (AdaLayerNormZero, or AdaLayerNormContinuous in a context_pre_only block), attn
/// (to_q/to_k/to_v, add_q_proj/add_k_proj/add_v_proj, to_out.0, to_add_out, norm_q/norm_k/norm_added_q/
/// norm_added_k), attn2 (dual attention: image-only self-attention), norm2, ff, norm2_context, ff_context.
///
/// Joint attention runs on cat([image, text]) along the sequence (image tokens FIRST, unlike FLUX). A
/// context_pre_only block (the last one of SD3) has no to_add_out, norm2_context, ff_context and returns no
/// encoder_hidden_states.
///
/// Guiders' layer hooks (guiders/layer_hooks.h), per batch slice (the other rows stay bit-identical):
///  - SkipBlock: the block returns its inputs (encoder_hidden_states, hidden_states) on the hook's rows, i.e.
///    exactly what diffusers' `skip_layers` does for the whole batch. (diffusers' TransformerBlockSkipHook returns
///    (hidden_states, encoder_hidden_states) in that order whatever the block's metadata says, which swaps the two
///    streams of a JointTransformerBlock; Tessera does not copy that.)
///  - SkipAttention: each attention module (attn, attn2) returns its inputs (norm_hidden_states and, for attn,
///    norm_encoder_hidden_states) on the rows (diffusers has no skip rule for JointAttnProcessor2_0).
///  - SkipFeedForward: ff and ff_context return their inputs on the rows (diffusers' FeedForwardSkipHook).
///  - IdentityAttention: the attention result is the (joint) value on the rows, as diffusers'
///    AttentionScoreSkipFunctionMode makes scaled_dot_product_attention return `value`.
///  - SmoothedEnergyBlur is not supported (the model refuses it before running).
///
///   JointTransformerBlock b(JointTransformerBlockOptions(1536, 24, 64).qk_norm("rms_norm"));
///   auto out = b(hidden_states, encoder_hidden_states, temb);  // out.hidden_states [B, N, 1536]
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "models/common/attention_dispatch.h"
#include "models/common/feed_forward.h"
#include "models/common/normalization.h"
#include "models/common/transformer_2d.h"  // HookSite

namespace tessera {

class JointAttentionImpl;

/// What a JointAttention module computes; swappable per module (JointAttentionImpl::set_processor).
class JointAttentionProcessor {
 public:
  virtual ~JointAttentionProcessor() = default;
  /// diffusers' class name ("JointAttnProcessor2_0").
  virtual std::string name() const = 0;
  /// hidden_states [B, N, query_dim]; encoder_hidden_states [B, M, added_kv_proj_dim] or undefined (plain
  /// self-attention, as attn2). Returns (hidden_states [B, N, out_dim], encoder_hidden_states [B, M, D] or
  /// undefined when none was given). `hooks` select this module's block.
  virtual std::pair<at::Tensor, at::Tensor> forward(JointAttentionImpl& attn, const at::Tensor& hidden_states,
                                                    const at::Tensor& encoder_hidden_states,
                                                    const HookSite& hooks) = 0;
};

/// diffusers' JointAttnProcessor2_0: q/k/v in [B, heads, L, head_dim], qk-norm, context projections
/// concatenated after the image tokens, one dispatch_attention, split, to_out.0 / to_add_out. Honours
/// IdentityAttention and SkipAttention hooks on their rows.
class JointAttnProcessor2_0 : public JointAttentionProcessor {
 public:
  explicit JointAttnProcessor2_0(AttentionBackend backend = AttentionBackend::Auto) : backend_(backend) {}
  std::string name() const override { return "JointAttnProcessor2_0"; }
  std::pair<at::Tensor, at::Tensor> forward(JointAttentionImpl& attn, const at::Tensor& hidden_states,
                                            const at::Tensor& encoder_hidden_states, const HookSite& hooks) override;

 private:
  AttentionBackend backend_;
};

/// Options of diffusers' Attention as SD3 builds it (the subset JointTransformerBlock and
/// SD3SingleTransformerBlock use).
struct JointAttentionOptions {
  explicit JointAttentionOptions(int64_t query_dim) : query_dim_(query_dim) {}
  TORCH_ARG(int64_t, query_dim);
  TORCH_ARG(int64_t, heads) = 8;
  TORCH_ARG(int64_t, dim_head) = 64;
  TORCH_ARG(std::optional<int64_t>, out_dim) = std::nullopt;            ///< set: heads = out_dim / dim_head
  TORCH_ARG(std::optional<int64_t>, added_kv_proj_dim) = std::nullopt;  ///< set: add_k/add_v(/add_q)_proj
  /// diffusers' None / False / True: not None adds add_q_proj; False adds to_add_out.
  TORCH_ARG(std::optional<bool>, context_pre_only) = std::nullopt;
  TORCH_ARG(bool, bias) = false;             ///< to_q/to_k/to_v
  TORCH_ARG(bool, added_proj_bias) = true;   ///< add_*_proj
  TORCH_ARG(bool, out_bias) = true;          ///< to_out.0, to_add_out
  /// null or "rms_norm" (diffusers' RMSNorm on each head); other kinds are refused (ModelLoadError).
  TORCH_ARG(std::optional<std::string>, qk_norm) = std::nullopt;
  TORCH_ARG(double, eps) = 1e-5;
};

/// diffusers' Attention module with the joint (added key/value) projections.
class JointAttentionImpl : public torch::nn::Module {
 public:
  explicit JointAttentionImpl(JointAttentionOptions options);
  /// See JointAttentionProcessor::forward.
  std::pair<at::Tensor, at::Tensor> forward(const at::Tensor& hidden_states, const at::Tensor& encoder_hidden_states = {},
                                            const HookSite& hooks = {});

  void set_processor(std::shared_ptr<JointAttentionProcessor> processor) { processor_ = std::move(processor); }
  const std::shared_ptr<JointAttentionProcessor>& processor() const { return processor_; }
  bool context_pre_only() const { return options.context_pre_only().value_or(false); }

  JointAttentionOptions options;
  int64_t heads = 0;
  int64_t inner_dim = 0;
  torch::nn::Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr};
  torch::nn::Linear add_q_proj{nullptr}, add_k_proj{nullptr}, add_v_proj{nullptr};
  torch::nn::Linear to_out_0{nullptr}, to_add_out{nullptr};
  torch::nn::ModuleList to_out{nullptr};  ///< [to_out.0, dropout]
  RMSNorm norm_q{nullptr}, norm_k{nullptr}, norm_added_q{nullptr}, norm_added_k{nullptr};

 private:
  std::shared_ptr<JointAttentionProcessor> processor_;
};
TORCH_MODULE(JointAttention);

/// Options of diffusers' JointTransformerBlock.
struct JointTransformerBlockOptions {
  JointTransformerBlockOptions(int64_t dim, int64_t num_attention_heads, int64_t attention_head_dim)
      : dim_(dim), num_attention_heads_(num_attention_heads), attention_head_dim_(attention_head_dim) {}
  TORCH_ARG(int64_t, dim);
  TORCH_ARG(int64_t, num_attention_heads);
  TORCH_ARG(int64_t, attention_head_dim);
  TORCH_ARG(bool, context_pre_only) = false;
  TORCH_ARG(std::optional<std::string>, qk_norm) = std::nullopt;  ///< null or "rms_norm"
  TORCH_ARG(bool, use_dual_attention) = false;
};

/// What a JointTransformerBlock returns, in diffusers' order; encoder_hidden_states is undefined after a
/// context_pre_only block.
struct JointTransformerBlockOutput {
  at::Tensor encoder_hidden_states;  ///< [B, M, dim]
  at::Tensor hidden_states;          ///< [B, N, dim]
};

/// diffusers' JointTransformerBlock.
class JointTransformerBlockImpl : public torch::nn::Module {
 public:
  explicit JointTransformerBlockImpl(JointTransformerBlockOptions options);
  /// hidden_states [B, N, dim], encoder_hidden_states [B, M, dim], temb [B, dim].
  JointTransformerBlockOutput forward(const at::Tensor& hidden_states, const at::Tensor& encoder_hidden_states,
                                      const at::Tensor& temb, const HookSite& hooks = {});

  bool context_pre_only() const { return options.context_pre_only(); }

  JointTransformerBlockOptions options;
  AdaLayerNormZero norm1{nullptr};             ///< without dual attention
  SD35AdaLayerNormZeroX norm1_x{nullptr};      ///< "norm1" with dual attention
  AdaLayerNormZero norm1_context{nullptr};     ///< not context_pre_only
  AdaLayerNormContinuous norm1_context_continuous{nullptr};  ///< "norm1_context" when context_pre_only
  JointAttention attn{nullptr}, attn2{nullptr};
  torch::nn::LayerNorm norm2{nullptr}, norm2_context{nullptr};
  FeedForward ff{nullptr}, ff_context{nullptr};
};
TORCH_MODULE(JointTransformerBlock);

}  // namespace tessera
