#include "models/common/transformer_2d.h"

#include <cmath>

#include <torch/torch.h>

#include "tessera/error.h"
#include "guiders/smoothed_energy_guidance.h"
#include "models/common/precision.h"

namespace tessera {

std::vector<const LayerHook*> HookSite::select(LayerHookKind kind) const {
  if (!hooks || hooks->empty()) return {};
  return hooks_for(*hooks, kind, stack_fqn, index, stack_is_primary);
}

// ---- processors ----

// Scaled dot-product attention of projected q [B, N, inner], k/v [B, M, inner] with `heads` heads.
at::Tensor multi_head_attention(AttentionImpl& attn, const at::Tensor& query, const at::Tensor& key,
                                const at::Tensor& value, const at::Tensor& attention_mask, AttentionBackend backend) {
  const int64_t batch = query.size(0);
  const int64_t head_dim = key.size(-1) / attn.heads;
  at::Tensor q = query.view({batch, -1, attn.heads, head_dim}).transpose(1, 2);  // [B, heads, N, d]
  at::Tensor k = key.view({batch, -1, attn.heads, head_dim}).transpose(1, 2);    // [B, heads, M, d]
  at::Tensor v = value.view({batch, -1, attn.heads, head_dim}).transpose(1, 2);  // [B, heads, M, d]
  const auto dtype = q.scalar_type();
  if (attn.options.upcast_attention() && dtype != at::kFloat) {
    q = q.to(at::kFloat);
    k = k.to(at::kFloat);
  }
  at::Tensor out = dispatch_attention(q, k, v.to(q.scalar_type()), attention_mask, attn.scale, backend);
  return out.to(dtype).transpose(1, 2).reshape({batch, -1, attn.heads * head_dim});  // [B, N, heads*d]
}

at::Tensor AttnProcessor2_0::forward(AttentionImpl& attn, const at::Tensor& hidden_states,
                                     const at::Tensor& encoder_hidden_states, const at::Tensor& attention_mask,
                                     const HookSite& hooks) {
  const bool self_attention = !encoder_hidden_states.defined();
  const at::Tensor& context = self_attention ? hidden_states : encoder_hidden_states;
  at::Tensor query = attn.to_q(hidden_states);  // [B, N, inner]
  at::Tensor key = attn.to_k(context);          // [B, M, inner]
  at::Tensor value = attn.to_v(context);        // [B, M, inner]
  at::Tensor out = multi_head_attention(attn, query, key, value, attention_mask, backend_);
  // diffusers' hooks perturb self-attention modules only (not is_cross_attention).
  const bool hookable = !attn.is_cross_attention() && hooks.hooks && !hooks.hooks->empty();
  if (hookable) {
    // PAG / skip_attention_scores: the scores are skipped, the attention result is the value itself.
    for (const LayerHook* h : hooks.select(LayerHookKind::IdentityAttention))
      out = replace_hook_rows(out, *h, [&](int64_t b, int64_t e) { return value.narrow(0, b, e - b); });
    // SEG: the same attention with the query blurred as a square image.
    for (const LayerHook* h : hooks.select(LayerHookKind::SmoothedEnergyBlur))
      out = replace_hook_rows(out, *h, [&](int64_t b, int64_t e) {
        at::Tensor blurred = smoothed_energy_blur(query.narrow(0, b, e - b), h->blur_sigma, h->blur_threshold_inf);
        at::Tensor mask = attention_mask.defined() && attention_mask.size(0) == out.size(0)
                              ? attention_mask.narrow(0, b, e - b)
                              : attention_mask;
        return multi_head_attention(attn, blurred, key.narrow(0, b, e - b), value.narrow(0, b, e - b), mask, backend_);
      });
  }
  out = attn.out_projection(out);  // to_out.0; to_out.1 (dropout) is the identity at inference
  if (hookable) {
    for (const LayerHook* h : hooks.select(LayerHookKind::SkipAttention))
      out = replace_hook_rows(out, *h, [&](int64_t b, int64_t e) {
        return skip_or_dropout(out.narrow(0, b, e - b), hidden_states.narrow(0, b, e - b), h->dropout);
      });
  }
  return out;
}

at::Tensor PAGIdentitySelfAttnProcessor::forward(AttentionImpl& attn, const at::Tensor& hidden_states,
                                                 const at::Tensor& encoder_hidden_states,
                                                 const at::Tensor& attention_mask, const HookSite& hooks) {
  if (encoder_hidden_states.defined())
    throw ExecutionError(name() + " is a self-attention processor; it got encoder_hidden_states");
  const int64_t batch = hidden_states.size(0);
  if (batch % num_chunks_ != 0)
    throw ExecutionError(name() + ": batch " + std::to_string(batch) + " is not a multiple of " +
                         std::to_string(num_chunks_));
  const int64_t ptb_start = batch / num_chunks_ * (num_chunks_ - 1);
  at::Tensor org = inner_.forward(attn, hidden_states.narrow(0, 0, ptb_start), {},
                                  attention_mask.defined() && attention_mask.size(0) == batch
                                      ? attention_mask.narrow(0, 0, ptb_start)
                                      : attention_mask,
                                  hooks);
  at::Tensor ptb = attn.out_projection(attn.to_v(hidden_states.narrow(0, ptb_start, batch - ptb_start)));
  return at::cat({org, ptb}, 0);
}

// ---- Attention ----

AttentionImpl::AttentionImpl(AttentionOptions options_) : options(std::move(options_)) {
  const int64_t inner_dim = options.out_dim().value_or(options.dim_head() * options.heads());
  const int64_t out_dim = options.out_dim().value_or(options.query_dim());
  heads = options.out_dim() ? *options.out_dim() / options.dim_head() : options.heads();
  scale = 1.0 / std::sqrt(static_cast<double>(options.dim_head()));
  const int64_t context_dim = options.cross_attention_dim().value_or(options.query_dim());
  using torch::nn::LinearOptions;
  to_q = register_module("to_q", torch::nn::Linear(LinearOptions(options.query_dim(), inner_dim).bias(options.bias())));
  to_k = register_module("to_k", torch::nn::Linear(LinearOptions(context_dim, inner_dim).bias(options.bias())));
  to_v = register_module("to_v", torch::nn::Linear(LinearOptions(context_dim, inner_dim).bias(options.bias())));
  to_out_0 = torch::nn::Linear(LinearOptions(inner_dim, out_dim).bias(options.out_bias()));
  to_out = register_module("to_out", torch::nn::ModuleList(to_out_0, torch::nn::Dropout(0.0)));
  processor_ = std::make_shared<AttnProcessor2_0>();
}

at::Tensor AttentionImpl::forward(const at::Tensor& hidden_states, const at::Tensor& encoder_hidden_states,
                                  const at::Tensor& attention_mask, const HookSite& hooks) {
  return processor_->forward(*this, hidden_states, encoder_hidden_states, attention_mask, hooks);
}

// ---- BasicTransformerBlock ----

BasicTransformerBlockImpl::BasicTransformerBlockImpl(BasicTransformerBlockOptions options_)
    : options(std::move(options_)) {
  const int64_t dim = options.dim();
  auto ln = [&] {
    return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})
                                    .eps(options.norm_eps())
                                    .elementwise_affine(options.norm_elementwise_affine()));
  };
  norm1 = register_module("norm1", ln());
  attn1 = register_module(
      "attn1", Attention(AttentionOptions(dim)
                             .heads(options.num_attention_heads())
                             .dim_head(options.attention_head_dim())
                             .bias(options.attention_bias())
                             .cross_attention_dim(options.only_cross_attention() ? options.cross_attention_dim()
                                                                                 : std::nullopt)
                             .upcast_attention(options.upcast_attention())));
  if (options.cross_attention_dim() || options.double_self_attention()) {
    norm2 = register_module("norm2", ln());
    attn2 = register_module(
        "attn2", Attention(AttentionOptions(dim)
                               .heads(options.num_attention_heads())
                               .dim_head(options.attention_head_dim())
                               .bias(options.attention_bias())
                               .cross_attention_dim(options.double_self_attention() ? std::nullopt
                                                                                    : options.cross_attention_dim())
                               .upcast_attention(options.upcast_attention())));
  }
  norm3 = register_module("norm3", ln());
  ff = register_module("ff", FeedForward(dim, dim * 4));
}

at::Tensor BasicTransformerBlockImpl::forward(const at::Tensor& hidden_states_in,
                                              const at::Tensor& encoder_hidden_states, const HookSite& hooks) {
  at::Tensor hidden_states = hidden_states_in;  // [B, N, dim]
  at::Tensor norm_hidden_states = layer_norm_fp32(*norm1, hidden_states);
  at::Tensor attn_output =
      attn1->forward(norm_hidden_states, options.only_cross_attention() ? encoder_hidden_states : at::Tensor(), {}, hooks);
  hidden_states = attn_output + hidden_states;

  if (attn2) {
    norm_hidden_states = layer_norm_fp32(*norm2, hidden_states);
    // No layer hooks for attn2 (diffusers' guiders perturb self-attention only; before IP-Adapter attn2 got an
    // empty site), only the call's IP-Adapter tokens.
    HookSite cross_site;
    cross_site.ip_hidden_states = hooks.ip_hidden_states;
    attn_output = attn2->forward(norm_hidden_states, options.double_self_attention() ? at::Tensor() : encoder_hidden_states,
                                 {}, cross_site);
    hidden_states = attn_output + hidden_states;
  }

  norm_hidden_states = layer_norm_fp32(*norm3, hidden_states);
  at::Tensor ff_output = ff(norm_hidden_states);
  for (const LayerHook* h : hooks.select(LayerHookKind::SkipFeedForward))
    ff_output = replace_hook_rows(ff_output, *h, [&](int64_t b, int64_t e) {
      return skip_or_dropout(ff_output.narrow(0, b, e - b), norm_hidden_states.narrow(0, b, e - b), h->dropout);
    });
  hidden_states = ff_output + hidden_states;

  for (const LayerHook* h : hooks.select(LayerHookKind::SkipBlock))
    hidden_states = replace_hook_rows(hidden_states, *h, [&](int64_t b, int64_t e) {
      return skip_or_dropout(hidden_states.narrow(0, b, e - b), hidden_states_in.narrow(0, b, e - b), h->dropout);
    });
  return hidden_states;
}

// ---- Transformer2DModel ----

Transformer2DModelImpl::Transformer2DModelImpl(Transformer2DModelOptions options_) : options(std::move(options_)) {
  const int64_t in_channels = options.in_channels();
  const int64_t inner_dim = options.num_attention_heads() * options.attention_head_dim();
  norm = register_module("norm", torch::nn::GroupNorm(torch::nn::GroupNormOptions(options.norm_num_groups(), in_channels)
                                                          .eps(1e-6)
                                                          .affine(true)));
  if (options.use_linear_projection()) {
    proj_in_linear = register_module("proj_in", torch::nn::Linear(in_channels, inner_dim));
  } else {
    proj_in_conv = register_module("proj_in", torch::nn::Conv2d(torch::nn::Conv2dOptions(in_channels, inner_dim, 1)));
  }
  transformer_blocks = register_module("transformer_blocks", torch::nn::ModuleList());
  for (int64_t d = 0; d < options.num_layers(); ++d)
    transformer_blocks->push_back(BasicTransformerBlock(
        BasicTransformerBlockOptions(inner_dim, options.num_attention_heads(), options.attention_head_dim())
            .cross_attention_dim(options.cross_attention_dim())
            .attention_bias(options.attention_bias())
            .only_cross_attention(options.only_cross_attention())
            .double_self_attention(options.double_self_attention())
            .upcast_attention(options.upcast_attention())));
  if (options.use_linear_projection()) {
    proj_out_linear = register_module("proj_out", torch::nn::Linear(inner_dim, in_channels));
  } else {
    proj_out_conv = register_module("proj_out", torch::nn::Conv2d(torch::nn::Conv2dOptions(inner_dim, in_channels, 1)));
  }
}

at::Tensor Transformer2DModelImpl::forward(const at::Tensor& hidden_states_in, const at::Tensor& encoder_hidden_states,
                                           const std::vector<LayerHook>* hooks,
                                           const std::vector<at::Tensor>* ip_hidden_states) {
  const int64_t batch = hidden_states_in.size(0), height = hidden_states_in.size(2), width = hidden_states_in.size(3);
  const at::Tensor& residual = hidden_states_in;
  at::Tensor hidden_states = group_norm_fp32(*norm, hidden_states_in);
  int64_t inner_dim = 0;
  if (proj_in_conv) {
    hidden_states = proj_in_conv(hidden_states);  // [B, inner, H, W]
    inner_dim = hidden_states.size(1);
    hidden_states = hidden_states.permute({0, 2, 3, 1}).reshape({batch, height * width, inner_dim});  // [B, HW, inner]
  } else {
    inner_dim = hidden_states.size(1);
    hidden_states = hidden_states.permute({0, 2, 3, 1}).reshape({batch, height * width, inner_dim});  // [B, HW, C]
    hidden_states = proj_in_linear(hidden_states);  // [B, HW, inner]
  }

  HookSite site{hooks, stack_fqn, 0, stack_is_primary, ip_hidden_states};
  for (size_t k = 0; k < transformer_blocks->size(); ++k) {
    site.index = static_cast<int64_t>(k);
    hidden_states = transformer_blocks[k]->as<BasicTransformerBlockImpl>()->forward(hidden_states,
                                                                                    encoder_hidden_states, site);
  }

  if (proj_out_conv) {
    hidden_states = hidden_states.reshape({batch, height, width, inner_dim}).permute({0, 3, 1, 2}).contiguous();
    hidden_states = proj_out_conv(hidden_states);  // [B, C, H, W]
  } else {
    hidden_states = proj_out_linear(hidden_states);  // [B, HW, C]
    hidden_states = hidden_states.reshape({batch, height, width, -1}).permute({0, 3, 1, 2}).contiguous();  // [B, C, H, W]
  }
  return hidden_states + residual;
}

}  // namespace tessera
