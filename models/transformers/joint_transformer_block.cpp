#include "models/transformers/joint_transformer_block.h"

#include <torch/torch.h>

#include "tessera/error.h"
#include "models/common/precision.h"

namespace tessera {

// ---- JointAttnProcessor2_0 ----

std::pair<at::Tensor, at::Tensor> JointAttnProcessor2_0::forward(JointAttentionImpl& attn,
                                                                 const at::Tensor& hidden_states,
                                                                 const at::Tensor& encoder_hidden_states,
                                                                 const HookSite& hooks) {
  const int64_t batch = hidden_states.size(0);
  const int64_t image_len = hidden_states.size(1);
  const bool joint = encoder_hidden_states.defined();
  if (joint && !attn.add_k_proj)
    throw ExecutionError("JointAttnProcessor2_0: encoder_hidden_states given to an attention without added "
                         "key/value projections");

  // `sample` projections.
  at::Tensor query = attn.to_q(hidden_states);  // [B, N, inner]
  at::Tensor key = attn.to_k(hidden_states);    // [B, N, inner]
  at::Tensor value = attn.to_v(hidden_states);  // [B, N, inner]
  const int64_t inner_dim = key.size(-1);
  const int64_t head_dim = inner_dim / attn.heads;
  query = query.view({batch, -1, attn.heads, head_dim}).transpose(1, 2);  // [B, heads, N, head_dim]
  key = key.view({batch, -1, attn.heads, head_dim}).transpose(1, 2);      // [B, heads, N, head_dim]
  value = value.view({batch, -1, attn.heads, head_dim}).transpose(1, 2);  // [B, heads, N, head_dim]
  if (attn.norm_q) query = attn.norm_q(query);
  if (attn.norm_k) key = attn.norm_k(key);

  // `context` projections, concatenated after the image tokens.
  if (joint) {
    at::Tensor eq = attn.add_q_proj(encoder_hidden_states);  // [B, M, inner]
    at::Tensor ek = attn.add_k_proj(encoder_hidden_states);  // [B, M, inner]
    at::Tensor ev = attn.add_v_proj(encoder_hidden_states);  // [B, M, inner]
    eq = eq.view({batch, -1, attn.heads, head_dim}).transpose(1, 2);  // [B, heads, M, head_dim]
    ek = ek.view({batch, -1, attn.heads, head_dim}).transpose(1, 2);  // [B, heads, M, head_dim]
    ev = ev.view({batch, -1, attn.heads, head_dim}).transpose(1, 2);  // [B, heads, M, head_dim]
    if (attn.norm_added_q) eq = attn.norm_added_q(eq);
    if (attn.norm_added_k) ek = attn.norm_added_k(ek);
    query = at::cat({query, eq}, 2);  // [B, heads, N+M, head_dim]
    key = at::cat({key, ek}, 2);      // [B, heads, N+M, head_dim]
    value = at::cat({value, ev}, 2);  // [B, heads, N+M, head_dim]
  }

  at::Tensor out = dispatch_attention(query, key, value, {}, std::nullopt, backend_);  // [B, heads, N+M, head_dim]
  const bool hooked = hooks.hooks && !hooks.hooks->empty();
  if (hooked)  // skip_attention_scores: scaled_dot_product_attention returns `value` (same length as the query)
    for (const LayerHook* h : hooks.select(LayerHookKind::IdentityAttention))
      out = replace_hook_rows(out, *h, [&](int64_t b, int64_t e) { return value.narrow(0, b, e - b); });
  out = out.transpose(1, 2).reshape({batch, -1, attn.heads * head_dim});  // [B, N+M, inner]
  out = out.to(query.scalar_type());

  at::Tensor context_out;
  if (joint) {
    // Split the attention outputs: image tokens first.
    context_out = out.narrow(1, image_len, out.size(1) - image_len);  // [B, M, inner]
    out = out.narrow(1, 0, image_len);                                // [B, N, inner]
    if (!attn.context_pre_only()) context_out = attn.to_add_out(context_out);  // [B, M, D]
  }
  out = attn.to_out_0(out);  // [B, N, out_dim]; to_out.1 (dropout) is the identity at inference

  if (hooked)  // skip_attention: the module returns its inputs
    for (const LayerHook* h : hooks.select(LayerHookKind::SkipAttention)) {
      const at::Tensor attn_out = out, ctx_out = context_out;
      out = replace_hook_rows(attn_out, *h, [&](int64_t b, int64_t e) {
        return skip_or_dropout(attn_out.narrow(0, b, e - b), hidden_states.narrow(0, b, e - b), h->dropout);
      });
      if (joint && context_out.size(-1) == encoder_hidden_states.size(-1))
        context_out = replace_hook_rows(ctx_out, *h, [&](int64_t b, int64_t e) {
          return skip_or_dropout(ctx_out.narrow(0, b, e - b), encoder_hidden_states.narrow(0, b, e - b),
                                 h->dropout);
        });
    }
  return {out, context_out};
}

// ---- Attention ----

JointAttentionImpl::JointAttentionImpl(JointAttentionOptions options_) : options(std::move(options_)) {
  const int64_t query_dim = options.query_dim();
  inner_dim = options.out_dim().value_or(options.dim_head() * options.heads());
  const int64_t out_dim = options.out_dim().value_or(query_dim);
  const int64_t out_context_dim = query_dim;
  heads = options.out_dim() ? *options.out_dim() / options.dim_head() : options.heads();
  if (options.qk_norm() && *options.qk_norm() != "rms_norm")
    throw ModelLoadError("Attention: qk_norm '" + *options.qk_norm() +
                         "' is not supported (null or \"rms_norm\"; diffusers also has layer_norm, fp32_layer_norm, "
                         "layer_norm_across_heads, rms_norm_across_heads, l2)");
  using torch::nn::Linear;
  using torch::nn::LinearOptions;
  to_q = register_module("to_q", Linear(LinearOptions(query_dim, inner_dim).bias(options.bias())));
  to_k = register_module("to_k", Linear(LinearOptions(query_dim, inner_dim).bias(options.bias())));
  to_v = register_module("to_v", Linear(LinearOptions(query_dim, inner_dim).bias(options.bias())));
  auto rms = [&] { return RMSNorm(RMSNormOptions(options.dim_head()).eps(options.eps())); };
  if (options.qk_norm()) {
    norm_q = register_module("norm_q", rms());
    norm_k = register_module("norm_k", rms());
  }
  if (const auto added = options.added_kv_proj_dim()) {
    add_k_proj = register_module("add_k_proj", Linear(LinearOptions(*added, inner_dim).bias(options.added_proj_bias())));
    add_v_proj = register_module("add_v_proj", Linear(LinearOptions(*added, inner_dim).bias(options.added_proj_bias())));
    if (options.context_pre_only().has_value())
      add_q_proj =
          register_module("add_q_proj", Linear(LinearOptions(*added, inner_dim).bias(options.added_proj_bias())));
    if (options.qk_norm()) {
      norm_added_q = register_module("norm_added_q", rms());
      norm_added_k = register_module("norm_added_k", rms());
    }
  }
  to_out_0 = Linear(LinearOptions(inner_dim, out_dim).bias(options.out_bias()));
  to_out = register_module("to_out", torch::nn::ModuleList(to_out_0, torch::nn::Dropout(0.0)));
  if (options.context_pre_only().has_value() && !*options.context_pre_only())
    to_add_out = register_module("to_add_out", Linear(LinearOptions(inner_dim, out_context_dim).bias(options.out_bias())));
  processor_ = std::make_shared<JointAttnProcessor2_0>();
}

std::pair<at::Tensor, at::Tensor> JointAttentionImpl::forward(const at::Tensor& hidden_states,
                                                              const at::Tensor& encoder_hidden_states,
                                                              const HookSite& hooks) {
  return processor_->forward(*this, hidden_states, encoder_hidden_states, hooks);
}

// ---- JointTransformerBlock ----

JointTransformerBlockImpl::JointTransformerBlockImpl(JointTransformerBlockOptions options_)
    : options(std::move(options_)) {
  const int64_t dim = options.dim();
  if (options.use_dual_attention()) norm1_x = register_module("norm1", SD35AdaLayerNormZeroX(dim));
  else norm1 = register_module("norm1", AdaLayerNormZero(dim));
  if (options.context_pre_only())
    norm1_context_continuous = register_module(
        "norm1_context", AdaLayerNormContinuous(dim, dim, /*elementwise_affine=*/false, /*eps=*/1e-6, /*bias=*/true));
  else norm1_context = register_module("norm1_context", AdaLayerNormZero(dim));

  attn = register_module("attn", JointAttention(JointAttentionOptions(dim)
                                                    .added_kv_proj_dim(dim)
                                                    .dim_head(options.attention_head_dim())
                                                    .heads(options.num_attention_heads())
                                                    .out_dim(dim)
                                                    .context_pre_only(options.context_pre_only())
                                                    .bias(true)
                                                    .qk_norm(options.qk_norm())
                                                    .eps(1e-6)));
  if (options.use_dual_attention())
    attn2 = register_module("attn2", JointAttention(JointAttentionOptions(dim)
                                                        .dim_head(options.attention_head_dim())
                                                        .heads(options.num_attention_heads())
                                                        .out_dim(dim)
                                                        .bias(true)
                                                        .qk_norm(options.qk_norm())
                                                        .eps(1e-6)));

  auto ln = [&] {
    return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).elementwise_affine(false).eps(1e-6));
  };
  auto feed_forward = [&] { return FeedForward(FeedForwardOptions(dim).dim_out(dim).activation_fn("gelu-approximate")); };
  norm2 = register_module("norm2", ln());
  ff = register_module("ff", feed_forward());
  if (!options.context_pre_only()) {
    norm2_context = register_module("norm2_context", ln());
    ff_context = register_module("ff_context", feed_forward());
  }
}

namespace {

// Feed-forward output with SkipFeedForward hooks applied on their rows (the module returns its input).
at::Tensor feed_forward_hooked(FeedForwardImpl& ff, const at::Tensor& input, const HookSite& hooks) {
  at::Tensor out = ff.forward(input);  // [B, L, dim]
  for (const LayerHook* h : hooks.select(LayerHookKind::SkipFeedForward)) {
    const at::Tensor normal = out;
    out = replace_hook_rows(normal, *h, [&](int64_t b, int64_t e) {
      return skip_or_dropout(normal.narrow(0, b, e - b), input.narrow(0, b, e - b), h->dropout);
    });
  }
  return out;
}

}  // namespace

JointTransformerBlockOutput JointTransformerBlockImpl::forward(const at::Tensor& hidden_states_in,
                                                               const at::Tensor& encoder_hidden_states_in,
                                                               const at::Tensor& temb, const HookSite& hooks) {
  at::Tensor hidden_states = hidden_states_in;                  // [B, N, dim]
  at::Tensor encoder_hidden_states = encoder_hidden_states_in;  // [B, M, dim]

  at::Tensor norm_hidden_states, gate_msa, shift_mlp, scale_mlp, gate_mlp, norm_hidden_states2, gate_msa2;
  if (norm1_x) {
    auto n = norm1_x(hidden_states, temb);
    norm_hidden_states = n.hidden_states;
    gate_msa = n.gate_msa;
    shift_mlp = n.shift_mlp;
    scale_mlp = n.scale_mlp;
    gate_mlp = n.gate_mlp;
    norm_hidden_states2 = n.norm_hidden_states2;
    gate_msa2 = n.gate_msa2;
  } else {
    auto n = norm1(hidden_states, temb);
    norm_hidden_states = n.hidden_states;
    gate_msa = n.gate_msa;
    shift_mlp = n.shift_mlp;
    scale_mlp = n.scale_mlp;
    gate_mlp = n.gate_mlp;
  }

  at::Tensor norm_encoder_hidden_states, c_gate_msa, c_shift_mlp, c_scale_mlp, c_gate_mlp;
  if (context_pre_only()) {
    norm_encoder_hidden_states = norm1_context_continuous(encoder_hidden_states, temb);
  } else {
    auto n = norm1_context(encoder_hidden_states, temb);
    norm_encoder_hidden_states = n.hidden_states;
    c_gate_msa = n.gate_msa;
    c_shift_mlp = n.shift_mlp;
    c_scale_mlp = n.scale_mlp;
    c_gate_mlp = n.gate_mlp;
  }

  // Attention.
  auto [attn_output, context_attn_output] = attn(norm_hidden_states, norm_encoder_hidden_states, hooks);

  // Process attention outputs for the `hidden_states`.
  attn_output = gate_msa.unsqueeze(1) * attn_output;
  hidden_states = hidden_states + attn_output;

  if (attn2) {
    at::Tensor attn_output2 = attn2->forward(norm_hidden_states2, at::Tensor(), hooks).first;  // [B, N, dim]
    attn_output2 = gate_msa2.unsqueeze(1) * attn_output2;
    hidden_states = hidden_states + attn_output2;
  }

  norm_hidden_states = layer_norm_fp32(*norm2, hidden_states);
  norm_hidden_states = norm_hidden_states * (1 + scale_mlp.unsqueeze(1)) + shift_mlp.unsqueeze(1);
  at::Tensor ff_output = feed_forward_hooked(*ff, norm_hidden_states, hooks);
  ff_output = gate_mlp.unsqueeze(1) * ff_output;
  hidden_states = hidden_states + ff_output;

  // Process attention outputs for the `encoder_hidden_states`.
  if (context_pre_only()) {
    encoder_hidden_states = at::Tensor();
  } else {
    context_attn_output = c_gate_msa.unsqueeze(1) * context_attn_output;
    encoder_hidden_states = encoder_hidden_states + context_attn_output;
    norm_encoder_hidden_states = layer_norm_fp32(*norm2_context, encoder_hidden_states);
    norm_encoder_hidden_states = norm_encoder_hidden_states * (1 + c_scale_mlp.unsqueeze(1)) + c_shift_mlp.unsqueeze(1);
    at::Tensor context_ff_output = feed_forward_hooked(*ff_context, norm_encoder_hidden_states, hooks);
    encoder_hidden_states = encoder_hidden_states + c_gate_mlp.unsqueeze(1) * context_ff_output;
  }

  // SkipBlock: the block returns its inputs on the hook's rows.
  for (const LayerHook* h : hooks.select(LayerHookKind::SkipBlock)) {
    const at::Tensor hs = hidden_states, ehs = encoder_hidden_states;
    hidden_states = replace_hook_rows(hs, *h, [&](int64_t b, int64_t e) {
      return skip_or_dropout(hs.narrow(0, b, e - b), hidden_states_in.narrow(0, b, e - b), h->dropout);
    });
    if (ehs.defined())
      encoder_hidden_states = replace_hook_rows(ehs, *h, [&](int64_t b, int64_t e) {
        return skip_or_dropout(ehs.narrow(0, b, e - b), encoder_hidden_states_in.narrow(0, b, e - b), h->dropout);
      });
  }
  return {encoder_hidden_states, hidden_states};
}

}  // namespace tessera
