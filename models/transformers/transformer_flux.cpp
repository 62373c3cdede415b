#include "models/transformers/transformer_flux.h"

#include <algorithm>
#include <numeric>
#include <regex>

#include <torch/torch.h>

#include "tessera/error.h"
#include "tessera/registry.h"
#include "guiders/smoothed_energy_guidance.h"
#include "models/common/precision.h"
#include "models/loading/component_factory.h"
#include "models/loading/config_reader.h"
#include "models/loading/state_dict.h"

// Layer hooks versus diffusers 0.40 (hooks/layer_skip.py, hooks/_helpers.py), where Tessera follows the intent:
// - A skipped block: diffusers' TransformerBlockSkipHook returns (hidden_states, encoder_hidden_states) while Flux
//   blocks return (encoder_hidden_states, hidden_states), so the model swaps the two streams after a skipped
//   block. Here both streams pass through unchanged.
// - Attention skips / SEG: layer_skip.py and smoothed_energy_guidance_utils.py read `is_cross_attention`, which
//   FluxAttention does not have (AttributeError). Here SkipAttention gives each stream its attention input,
//   IdentityAttention the joint value, and SmoothedEnergyBlur blurs to_q's output (the image stream in double
//   blocks, the joint sequence in single blocks), as these hooks do on diffusers' Attention.
// - fqn "auto": diffusers takes the first of a set-ordered tuple of identifiers present on the model (Python's
//   string-hash order, so it can differ between runs); Tessera always takes "transformer_blocks".

namespace tessera {

// ---- config ----

FluxTransformer2DModelConfig FluxTransformer2DModelConfig::from_config(ModelConfig& c) {
  FluxTransformer2DModelConfig f;
  f.patch_size = c.get_int("patch_size", 1);
  f.in_channels = c.get_int("in_channels", 64);
  f.out_channels = c.get_optional_int("out_channels");
  f.num_layers = c.get_int("num_layers", 19);
  f.num_single_layers = c.get_int("num_single_layers", 38);
  f.attention_head_dim = c.get_int("attention_head_dim", 128);
  f.num_attention_heads = c.get_int("num_attention_heads", 24);
  f.joint_attention_dim = c.get_int("joint_attention_dim", 4096);
  f.pooled_projection_dim = c.get_int("pooled_projection_dim", 768);
  f.guidance_embeds = c.get_bool("guidance_embeds", false);
  f.axes_dims_rope = c.get_int_list("axes_dims_rope", f.axes_dims_rope);
  for (auto [name, value] : {std::pair<const char*, int64_t>{"patch_size", f.patch_size},
                             {"in_channels", f.in_channels},
                             {"attention_head_dim", f.attention_head_dim},
                             {"num_attention_heads", f.num_attention_heads},
                             {"joint_attention_dim", f.joint_attention_dim},
                             {"pooled_projection_dim", f.pooled_projection_dim}})
    if (value <= 0) c.fail(name, "must be positive, got " + std::to_string(value));
  if (f.out_channels && *f.out_channels <= 0)
    c.fail("out_channels", "must be positive or null, got " + std::to_string(*f.out_channels));
  if (f.num_layers < 0) c.fail("num_layers", "must not be negative");
  if (f.num_single_layers < 0) c.fail("num_single_layers", "must not be negative");
  if (f.axes_dims_rope.empty()) c.fail("axes_dims_rope", "must not be empty");
  for (int64_t d : f.axes_dims_rope)
    if (d <= 0 || d % 2 != 0) c.fail("axes_dims_rope", "every entry must be positive and even, got " + std::to_string(d));
  const int64_t rope_dim = std::accumulate(f.axes_dims_rope.begin(), f.axes_dims_rope.end(), int64_t{0});
  if (rope_dim != f.attention_head_dim)
    c.fail("axes_dims_rope", "must sum to attention_head_dim (" + std::to_string(f.attention_head_dim) + "), sums to " +
                                 std::to_string(rope_dim));
  c.finish();
  return f;
}

FluxTransformer2DModelConfig FluxTransformer2DModelConfig::from_json(const nlohmann::json& json, const std::string& source) {
  ModelConfig c(json, source);
  return from_config(c);
}

// ---- attention ----

std::pair<at::Tensor, at::Tensor> FluxAttnProcessor::forward(FluxAttentionImpl& attn, const at::Tensor& hidden_states,
                                                             const at::Tensor& encoder_hidden_states,
                                                             const std::pair<at::Tensor, at::Tensor>& image_rotary_emb,
                                                             const HookSite& hooks) {
  const bool hookable = hooks.hooks && !hooks.hooks->empty();
  const int64_t batch = hidden_states.size(0), head_dim = attn.head_dim;
  at::Tensor query = attn.to_q(hidden_states);  // [B, S, inner]
  if (hookable)
    for (const LayerHook* h : hooks.select(LayerHookKind::SmoothedEnergyBlur))
      query = replace_hook_rows(query, *h, [&](int64_t b, int64_t e) {
        return smoothed_energy_blur(query.narrow(0, b, e - b), h->blur_sigma, h->blur_threshold_inf);
      });
  at::Tensor key = attn.to_k(hidden_states);    // [B, S, inner]
  at::Tensor value = attn.to_v(hidden_states);  // [B, S, inner]

  query = query.view({batch, query.size(1), -1, head_dim});  // [B, S, H, Dh]
  key = key.view({batch, key.size(1), -1, head_dim});        // [B, S, H, Dh]
  value = value.view({batch, value.size(1), -1, head_dim});  // [B, S, H, Dh]
  query = attn.norm_q(query);
  key = attn.norm_k(key);

  const bool joint = attn.add_q_proj && encoder_hidden_states.defined();
  const int64_t text_len = joint ? encoder_hidden_states.size(1) : 0;
  if (joint) {
    at::Tensor encoder_query = attn.add_q_proj(encoder_hidden_states);
    at::Tensor encoder_key = attn.add_k_proj(encoder_hidden_states);
    at::Tensor encoder_value = attn.add_v_proj(encoder_hidden_states);
    encoder_query = encoder_query.view({batch, text_len, -1, head_dim});  // [B, S_txt, H, Dh]
    encoder_key = encoder_key.view({batch, text_len, -1, head_dim});      // [B, S_txt, H, Dh]
    encoder_value = encoder_value.view({batch, text_len, -1, head_dim});  // [B, S_txt, H, Dh]
    encoder_query = attn.norm_added_q(encoder_query);
    encoder_key = attn.norm_added_k(encoder_key);
    // Text first in the joint sequence.
    query = at::cat({encoder_query, query}, 1);  // [B, S_txt + S_img, H, Dh]
    key = at::cat({encoder_key, key}, 1);
    value = at::cat({encoder_value, value}, 1);
  }
  if (image_rotary_emb.first.defined()) {
    query = apply_rotary_emb(query, image_rotary_emb, true, /*sequence_dim=*/1);
    key = apply_rotary_emb(key, image_rotary_emb, true, /*sequence_dim=*/1);
  }

  at::Tensor out = dispatch_attention(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), {},
                                      std::nullopt, backend_);  // [B, H, S, Dh]
  out = out.transpose(1, 2).flatten(2, 3).to(query.scalar_type());  // [B, S, H*Dh]
  if (hookable)
    // skip_attention_scores (PAG): the attention returns its value.
    for (const LayerHook* h : hooks.select(LayerHookKind::IdentityAttention))
      out = replace_hook_rows(out, *h, [&](int64_t b, int64_t e) {
        return value.narrow(0, b, e - b).flatten(2, 3).to(out.scalar_type());  // [rows, S, H*Dh]
      });

  if (!joint) {
    if (hookable)
      for (const LayerHook* h : hooks.select(LayerHookKind::SkipAttention))
        out = replace_hook_rows(out, *h, [&](int64_t b, int64_t e) {
          return skip_or_dropout(out.narrow(0, b, e - b), hidden_states.narrow(0, b, e - b), h->dropout);
        });
    return {out, at::Tensor()};
  }
  at::Tensor encoder_out = out.narrow(1, 0, text_len);                  // [B, S_txt, inner]
  at::Tensor image_out = out.narrow(1, text_len, out.size(1) - text_len);  // [B, S_img, inner]
  image_out = attn.to_out_0(image_out.contiguous());  // to_out.1 (dropout) is the identity at inference
  encoder_out = attn.to_add_out(encoder_out.contiguous());
  if (hookable)
    for (const LayerHook* h : hooks.select(LayerHookKind::SkipAttention)) {
      image_out = replace_hook_rows(image_out, *h, [&](int64_t b, int64_t e) {
        return skip_or_dropout(image_out.narrow(0, b, e - b), hidden_states.narrow(0, b, e - b), h->dropout);
      });
      encoder_out = replace_hook_rows(encoder_out, *h, [&](int64_t b, int64_t e) {
        return skip_or_dropout(encoder_out.narrow(0, b, e - b), encoder_hidden_states.narrow(0, b, e - b), h->dropout);
      });
    }
  return {image_out, encoder_out};
}

FluxAttentionImpl::FluxAttentionImpl(FluxAttentionOptions options_) : options(std::move(options_)) {
  head_dim = options.dim_head();
  inner_dim = options.out_dim().value_or(options.dim_head() * options.heads());
  const int64_t out_dim = options.out_dim().value_or(options.query_dim());
  heads = options.out_dim() ? *options.out_dim() / options.dim_head() : options.heads();
  using torch::nn::Linear;
  using torch::nn::LinearOptions;
  auto rms = [&](bool affine) {
    return RMSNorm(RMSNormOptions(head_dim).eps(options.eps()).elementwise_affine(affine).flavor(RMSNormFlavor::Torch));
  };
  norm_q = register_module("norm_q", rms(options.elementwise_affine()));
  norm_k = register_module("norm_k", rms(options.elementwise_affine()));
  to_q = register_module("to_q", Linear(LinearOptions(options.query_dim(), inner_dim).bias(options.bias())));
  to_k = register_module("to_k", Linear(LinearOptions(options.query_dim(), inner_dim).bias(options.bias())));
  to_v = register_module("to_v", Linear(LinearOptions(options.query_dim(), inner_dim).bias(options.bias())));
  if (!options.pre_only()) {
    to_out_0 = Linear(LinearOptions(inner_dim, out_dim).bias(options.out_bias()));
    to_out = register_module("to_out", torch::nn::ModuleList(to_out_0, torch::nn::Dropout(0.0)));
  }
  if (options.added_kv_proj_dim()) {
    const int64_t added = *options.added_kv_proj_dim();
    norm_added_q = register_module("norm_added_q", rms(true));  // diffusers: RMSNorm(dim_head, eps), affine
    norm_added_k = register_module("norm_added_k", rms(true));
    add_q_proj = register_module("add_q_proj", Linear(LinearOptions(added, inner_dim).bias(options.added_proj_bias())));
    add_k_proj = register_module("add_k_proj", Linear(LinearOptions(added, inner_dim).bias(options.added_proj_bias())));
    add_v_proj = register_module("add_v_proj", Linear(LinearOptions(added, inner_dim).bias(options.added_proj_bias())));
    to_add_out = register_module("to_add_out", Linear(LinearOptions(inner_dim, options.query_dim()).bias(options.out_bias())));
  }
  processor_ = std::make_shared<FluxAttnProcessor>();
}

std::pair<at::Tensor, at::Tensor> FluxAttentionImpl::forward(const at::Tensor& hidden_states,
                                                             const at::Tensor& encoder_hidden_states,
                                                             const std::pair<at::Tensor, at::Tensor>& image_rotary_emb,
                                                             const HookSite& hooks) {
  return processor_->forward(*this, hidden_states, encoder_hidden_states, image_rotary_emb, hooks);
}

// ---- blocks ----

namespace {
torch::nn::LayerNorm plain_layer_norm(int64_t dim) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).elementwise_affine(false).eps(1e-6));
}
}  // namespace

FluxTransformerBlockImpl::FluxTransformerBlockImpl(int64_t dim, int64_t num_attention_heads, int64_t attention_head_dim,
                                                   double eps) {
  norm1 = register_module("norm1", AdaLayerNormZero(dim));
  norm1_context = register_module("norm1_context", AdaLayerNormZero(dim));
  attn = register_module("attn", FluxAttention(FluxAttentionOptions(dim)
                                                   .added_kv_proj_dim(dim)
                                                   .dim_head(attention_head_dim)
                                                   .heads(num_attention_heads)
                                                   .out_dim(dim)
                                                   .bias(true)
                                                   .eps(eps)));
  norm2 = register_module("norm2", plain_layer_norm(dim));
  ff = register_module("ff", FeedForward(FeedForwardOptions(dim).dim_out(dim).activation_fn("gelu-approximate")));
  norm2_context = register_module("norm2_context", plain_layer_norm(dim));
  ff_context =
      register_module("ff_context", FeedForward(FeedForwardOptions(dim).dim_out(dim).activation_fn("gelu-approximate")));
}

std::pair<at::Tensor, at::Tensor> FluxTransformerBlockImpl::forward(
    const at::Tensor& hidden_states_in, const at::Tensor& encoder_hidden_states_in, const at::Tensor& temb,
    const std::pair<at::Tensor, at::Tensor>& image_rotary_emb, const HookSite& hooks) {
  auto n1 = norm1(hidden_states_in, temb);                 // [B, S_img, D] + chunks [B, D]
  auto n1c = norm1_context(encoder_hidden_states_in, temb);  // [B, S_txt, D] + chunks [B, D]

  auto [attn_output, context_attn_output] = attn(n1.hidden_states, n1c.hidden_states, image_rotary_emb, hooks);

  // Image stream.
  attn_output = n1.gate_msa.unsqueeze(1) * attn_output;
  at::Tensor hidden_states = hidden_states_in + attn_output;
  at::Tensor norm_hidden_states = layer_norm_fp32(*norm2, hidden_states);
  norm_hidden_states = norm_hidden_states * (1 + n1.scale_mlp.unsqueeze(1)) + n1.shift_mlp.unsqueeze(1);
  at::Tensor ff_output = ff(norm_hidden_states);
  // Text stream's feed-forward input, computed below; the FF skip hook is applied to each FF output.
  for (const LayerHook* h : hooks.select(LayerHookKind::SkipFeedForward))
    ff_output = replace_hook_rows(ff_output, *h, [&](int64_t b, int64_t e) {
      return skip_or_dropout(ff_output.narrow(0, b, e - b), norm_hidden_states.narrow(0, b, e - b), h->dropout);
    });
  ff_output = n1.gate_mlp.unsqueeze(1) * ff_output;
  hidden_states = hidden_states + ff_output;

  // Text stream.
  context_attn_output = n1c.gate_msa.unsqueeze(1) * context_attn_output;
  at::Tensor encoder_hidden_states = encoder_hidden_states_in + context_attn_output;
  at::Tensor norm_encoder_hidden_states = layer_norm_fp32(*norm2_context, encoder_hidden_states);
  norm_encoder_hidden_states =
      norm_encoder_hidden_states * (1 + n1c.scale_mlp.unsqueeze(1)) + n1c.shift_mlp.unsqueeze(1);
  at::Tensor context_ff_output = ff_context(norm_encoder_hidden_states);
  for (const LayerHook* h : hooks.select(LayerHookKind::SkipFeedForward))
    context_ff_output = replace_hook_rows(context_ff_output, *h, [&](int64_t b, int64_t e) {
      return skip_or_dropout(context_ff_output.narrow(0, b, e - b), norm_encoder_hidden_states.narrow(0, b, e - b),
                             h->dropout);
    });
  encoder_hidden_states = encoder_hidden_states + n1c.gate_mlp.unsqueeze(1) * context_ff_output;

  for (const LayerHook* h : hooks.select(LayerHookKind::SkipBlock)) {
    hidden_states = replace_hook_rows(hidden_states, *h, [&](int64_t b, int64_t e) {
      return skip_or_dropout(hidden_states.narrow(0, b, e - b), hidden_states_in.narrow(0, b, e - b), h->dropout);
    });
    encoder_hidden_states = replace_hook_rows(encoder_hidden_states, *h, [&](int64_t b, int64_t e) {
      return skip_or_dropout(encoder_hidden_states.narrow(0, b, e - b), encoder_hidden_states_in.narrow(0, b, e - b),
                             h->dropout);
    });
  }
  return {encoder_hidden_states, hidden_states};
}

FluxSingleTransformerBlockImpl::FluxSingleTransformerBlockImpl(int64_t dim, int64_t num_attention_heads,
                                                               int64_t attention_head_dim, double mlp_ratio) {
  mlp_hidden_dim = static_cast<int64_t>(static_cast<double>(dim) * mlp_ratio);
  norm = register_module("norm", AdaLayerNormZeroSingle(dim));
  proj_mlp = register_module("proj_mlp", torch::nn::Linear(dim, mlp_hidden_dim));
  proj_out = register_module("proj_out", torch::nn::Linear(dim + mlp_hidden_dim, dim));
  attn = register_module("attn", FluxAttention(FluxAttentionOptions(dim)
                                                   .dim_head(attention_head_dim)
                                                   .heads(num_attention_heads)
                                                   .out_dim(dim)
                                                   .bias(true)
                                                   .eps(1e-6)
                                                   .pre_only(true)));
}

std::pair<at::Tensor, at::Tensor> FluxSingleTransformerBlockImpl::forward(
    const at::Tensor& hidden_states_in, const at::Tensor& encoder_hidden_states_in, const at::Tensor& temb,
    const std::pair<at::Tensor, at::Tensor>& image_rotary_emb, const HookSite& hooks) {
  const int64_t text_seq_len = encoder_hidden_states_in.size(1);
  at::Tensor hidden_states = at::cat({encoder_hidden_states_in, hidden_states_in}, 1);  // [B, S_txt + S_img, D]

  const at::Tensor residual = hidden_states;
  auto n = norm(hidden_states, temb);  // [B, S, D], gate [B, D]
  at::Tensor mlp_hidden_states = at::gelu(proj_mlp(n.hidden_states), "tanh");  // [B, S, mlp]
  at::Tensor attn_output = attn(n.hidden_states, at::Tensor(), image_rotary_emb, hooks).first;  // [B, S, D]
  // SkipFeedForward selects no module here: diffusers' hook targets FeedForward modules, and this block has none.

  hidden_states = at::cat({attn_output, mlp_hidden_states}, 2);  // [B, S, D + mlp]
  hidden_states = n.gate.unsqueeze(1) * proj_out(hidden_states);
  hidden_states = residual + hidden_states;

  at::Tensor encoder_hidden_states = hidden_states.narrow(1, 0, text_seq_len);                        // [B, S_txt, D]
  at::Tensor image_hidden_states = hidden_states.narrow(1, text_seq_len, hidden_states.size(1) - text_seq_len);  // [B, S_img, D]
  for (const LayerHook* h : hooks.select(LayerHookKind::SkipBlock)) {
    image_hidden_states = replace_hook_rows(image_hidden_states, *h, [&](int64_t b, int64_t e) {
      return skip_or_dropout(image_hidden_states.narrow(0, b, e - b), hidden_states_in.narrow(0, b, e - b), h->dropout);
    });
    encoder_hidden_states = replace_hook_rows(encoder_hidden_states, *h, [&](int64_t b, int64_t e) {
      return skip_or_dropout(encoder_hidden_states.narrow(0, b, e - b), encoder_hidden_states_in.narrow(0, b, e - b),
                             h->dropout);
    });
  }
  return {encoder_hidden_states, image_hidden_states};
}

// ---- model ----

FluxTransformer2DModelImpl::FluxTransformer2DModelImpl(FluxTransformer2DModelConfig config_) : config(std::move(config_)) {
  const int64_t inner_dim = config.inner_dim();
  pos_embed = register_module("pos_embed", FluxPosEmbed(10000.0, config.axes_dims_rope));
  if (config.guidance_embeds)
    time_text_embed_guidance = register_module(
        "time_text_embed", CombinedTimestepGuidanceTextProjEmbeddings(inner_dim, config.pooled_projection_dim));
  else
    time_text_embed =
        register_module("time_text_embed", CombinedTimestepTextProjEmbeddings(inner_dim, config.pooled_projection_dim));
  context_embedder = register_module("context_embedder", torch::nn::Linear(config.joint_attention_dim, inner_dim));
  x_embedder = register_module("x_embedder", torch::nn::Linear(config.in_channels, inner_dim));
  transformer_blocks = register_module("transformer_blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.num_layers; ++i)
    transformer_blocks->push_back(
        FluxTransformerBlock(inner_dim, config.num_attention_heads, config.attention_head_dim));
  single_transformer_blocks = register_module("single_transformer_blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.num_single_layers; ++i)
    single_transformer_blocks->push_back(
        FluxSingleTransformerBlock(inner_dim, config.num_attention_heads, config.attention_head_dim));
  norm_out = register_module("norm_out", AdaLayerNormContinuous(inner_dim, inner_dim, /*elementwise_affine=*/false, 1e-6));
  proj_out = register_module(
      "proj_out", torch::nn::Linear(torch::nn::LinearOptions(inner_dim, config.patch_size * config.patch_size *
                                                                            config.resolved_out_channels())
                                        .bias(true)));
}

std::vector<std::pair<std::string, int64_t>> FluxTransformer2DModelImpl::hook_stacks() const {
  return {{"transformer_blocks", static_cast<int64_t>(transformer_blocks->size())},
          {"single_transformer_blocks", static_cast<int64_t>(single_transformer_blocks->size())}};
}

void FluxTransformer2DModelImpl::validate_hooks(const std::vector<LayerHook>& hooks) const {
  const auto stacks = hook_stacks();
  for (const LayerHook& h : hooks) {
    const std::string fqn = h.layers.fqn == "auto" ? std::string("transformer_blocks") : h.layers.fqn;
    auto it = std::find_if(stacks.begin(), stacks.end(), [&](const auto& s) { return s.first == fqn; });
    if (it == stacks.end())
      throw ValidationError("layer hook fqn '" + h.layers.fqn +
                            "' names no block stack of FluxTransformer2DModel (transformer_blocks, "
                            "single_transformer_blocks, or auto = transformer_blocks)");
    for (int64_t idx : h.layers.indices)
      if (idx < 0 || idx >= it->second)
        throw ValidationError("layer hook index " + std::to_string(idx) + " is out of range for '" + fqn + "' (" +
                              std::to_string(it->second) + " blocks)");
  }
}

namespace {
std::string shape_str(const at::Tensor& t) { return t.defined() ? c10::str(t.sizes()) : std::string("undefined"); }
}  // namespace

void FluxTransformer2DModelImpl::check_inputs(const at::Tensor& hidden_states, const at::Tensor& encoder_hidden_states,
                                              const at::Tensor& pooled_projections, const at::Tensor& timestep,
                                              const at::Tensor& img_ids, const at::Tensor& txt_ids,
                                              const at::Tensor& guidance, const FluxTransformerInputs& inputs) const {
  const std::string m = "FluxTransformer2DModel: ";
  if (!hidden_states.defined() || hidden_states.dim() != 3 || hidden_states.size(2) != config.in_channels)
    throw InputError(m + "hidden_states must be packed latents [B, S_img, " + std::to_string(config.in_channels) +
                     "], got " + shape_str(hidden_states));
  const int64_t batch = hidden_states.size(0), s_img = hidden_states.size(1);
  if (!encoder_hidden_states.defined() || encoder_hidden_states.dim() != 3 || encoder_hidden_states.size(0) != batch ||
      encoder_hidden_states.size(2) != config.joint_attention_dim)
    throw InputError(m + "encoder_hidden_states must be [" + std::to_string(batch) + ", S_txt, " +
                     std::to_string(config.joint_attention_dim) + "], got " + shape_str(encoder_hidden_states));
  const int64_t s_txt = encoder_hidden_states.size(1);
  if (!pooled_projections.defined() || pooled_projections.dim() != 2 || pooled_projections.size(0) != batch ||
      pooled_projections.size(1) != config.pooled_projection_dim)
    throw InputError(m + "pooled_projections must be [" + std::to_string(batch) + ", " +
                     std::to_string(config.pooled_projection_dim) + "], got " + shape_str(pooled_projections));
  auto check_per_row = [&](const at::Tensor& t, const char* name) {
    if (!t.defined() || t.dim() > 1 || (t.dim() == 1 && t.size(0) != batch && t.size(0) != 1))
      throw InputError(m + name + " must be [" + std::to_string(batch) + "] (or one value), got " + shape_str(t));
  };
  check_per_row(timestep, "timestep");
  const auto n_axes = static_cast<int64_t>(config.axes_dims_rope.size());
  auto check_ids = [&](const at::Tensor& ids, const char* name, int64_t rows, const char* seq) {
    if (!ids.defined() || ids.dim() != 2 || ids.size(0) != rows || ids.size(1) != n_axes)
      throw InputError(m + name + " must be [" + seq + " = " + std::to_string(rows) + ", " + std::to_string(n_axes) +
                       "] (one row per token, one column per axes_dims_rope entry), got " + shape_str(ids));
  };
  check_ids(img_ids, "img_ids", s_img, "S_img");
  check_ids(txt_ids, "txt_ids", s_txt, "S_txt");
  if (config.guidance_embeds) {
    if (!guidance.defined())
      throw InputError(m + "this model embeds guidance (guidance_embeds true, FLUX.1-dev style): pass guidance [" +
                       std::to_string(batch) + "]");
    check_per_row(guidance, "guidance");
  } else if (guidance.defined()) {
    throw InputError(m + "guidance was given but this model has guidance_embeds false (FLUX.1-schnell style); "
                         "leave it unset");
  }
  validate_hooks(inputs.hooks);
}

int FluxTransformer2DModelImpl::set_attn_processor(const std::string& name_regex,
                                                   const std::function<std::shared_ptr<FluxAttentionProcessor>()>& make) {
  const std::regex re(name_regex);
  int count = 0;
  for (auto& item : named_modules("", false))
    if (auto* a = item.value()->as<FluxAttentionImpl>())
      if (std::regex_search(item.key(), re)) {
        a->set_processor(make());
        ++count;
      }
  return count;
}

size_t FluxTransformer2DModelImpl::nbytes() const { return module_nbytes(*this); }

at::Tensor FluxTransformer2DModelImpl::forward(const at::Tensor& hidden_states_in,
                                               const at::Tensor& encoder_hidden_states_in,
                                               const at::Tensor& pooled_projections_in, const at::Tensor& timestep_in,
                                               const at::Tensor& img_ids, const at::Tensor& txt_ids,
                                               const at::Tensor& guidance_in, const FluxTransformerInputs& inputs) {
  check_inputs(hidden_states_in, encoder_hidden_states_in, pooled_projections_in, timestep_in, img_ids, txt_ids,
               guidance_in, inputs);
  const std::vector<LayerHook>* hooks = inputs.hooks.empty() ? nullptr : &inputs.hooks;
  const at::ScalarType compute_dtype = dtype();
  const int64_t batch = hidden_states_in.size(0);
  const auto device = hidden_states_in.device();

  at::Tensor hidden_states = x_embedder(hidden_states_in.to(compute_dtype));  // [B, S_img, D]

  // timestep.to(hidden dtype) * 1000 (in bf16 the rounding of t/1000 happens before the ×1000, as in diffusers).
  at::Tensor timestep = timestep_in.to(device).to(hidden_states.scalar_type()).reshape({-1}).expand({batch}) * 1000;  // [B]
  at::Tensor guidance;
  if (guidance_in.defined())
    guidance = guidance_in.to(device).to(hidden_states.scalar_type()).reshape({-1}).expand({batch}) * 1000;  // [B]
  const at::Tensor pooled_projections = pooled_projections_in.to(compute_dtype);
  at::Tensor temb = guidance.defined() ? time_text_embed_guidance(timestep, guidance, pooled_projections)
                                       : time_text_embed(timestep, pooled_projections);  // [B, D]
  at::Tensor encoder_hidden_states = context_embedder(encoder_hidden_states_in.to(compute_dtype));  // [B, S_txt, D]

  at::Tensor ids = at::cat({txt_ids.to(device), img_ids.to(device)}, 0);  // [S_txt + S_img, n_axes]
  const std::pair<at::Tensor, at::Tensor> image_rotary_emb = pos_embed(ids);  // (cos, sin) [S, head_dim] float32

  HookSite site{hooks, "transformer_blocks", 0, /*stack_is_primary=*/true};
  for (size_t i = 0; i < transformer_blocks->size(); ++i) {
    site.index = static_cast<int64_t>(i);
    std::tie(encoder_hidden_states, hidden_states) = transformer_blocks[i]->as<FluxTransformerBlockImpl>()->forward(
        hidden_states, encoder_hidden_states, temb, image_rotary_emb, site);
  }
  HookSite single_site{hooks, "single_transformer_blocks", 0, /*stack_is_primary=*/false};
  for (size_t i = 0; i < single_transformer_blocks->size(); ++i) {
    single_site.index = static_cast<int64_t>(i);
    std::tie(encoder_hidden_states, hidden_states) =
        single_transformer_blocks[i]->as<FluxSingleTransformerBlockImpl>()->forward(
            hidden_states, encoder_hidden_states, temb, image_rotary_emb, single_site);
  }

  hidden_states = norm_out(hidden_states, temb);  // [B, S_img, D]
  at::Tensor output = proj_out(hidden_states);   // [B, S_img, p²·out]
  return output.to(at::kFloat);
}

std::shared_ptr<FluxTransformer2DModelImpl> FluxTransformer2DModelImpl::from_pretrained(const std::string& folder,
                                                                                       const std::string& subfolder,
                                                                                       const std::string& variant,
                                                                                       const nlohmann::json& overrides,
                                                                                       at::ScalarType dtype) {
  ModelConfig cfg = ModelConfig::from_folder(folder, subfolder);
  if (overrides.is_object() && !overrides.empty()) cfg.apply_overrides(overrides);
  std::shared_ptr<FluxTransformer2DModelImpl> model;
  {
    SkipRandomInit skip;  // every parameter is loaded below
    model = std::make_shared<FluxTransformer2DModelImpl>(FluxTransformer2DModelConfig::from_config(cfg));
  }
  load_state_dict(*model, resolve_weight_files(component_dir(folder, subfolder), kDiffusersWeightsName, variant), dtype);
  model->eval();
  return model;
}

void register_transformer_flux(Registry& registry) {
  ComponentTypeInfo info;
  info.type = "FluxTransformer2DModel";
  info.category = ComponentCategory::Model;
  info.description = "diffusers' FluxTransformer2DModel (FLUX.1 schnell/dev) from a diffusers folder";
  info.create = [](const ComponentSpec& spec) {
    return create_diffusers_model<FluxTransformer2DModelImpl, FluxTransformer2DModelConfig>(spec);
  };
  registry.add_component_type(std::move(info));
}

}  // namespace tessera
