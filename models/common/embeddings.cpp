#include "models/common/embeddings.h"

#include <cmath>

#include <torch/torch.h>

#include "tessera/error.h"
#include "models/common/resnet.h"  // apply_activation, check_activation

namespace tessera {

at::Tensor get_timestep_embedding(const at::Tensor& timesteps, int64_t embedding_dim, bool flip_sin_to_cos,
                                  double downscale_freq_shift, double scale, double max_period) {
  if (timesteps.dim() != 1) throw ExecutionError("get_timestep_embedding: timesteps must be 1-D, got " +
                                                 std::to_string(timesteps.dim()) + "-D");
  const int64_t half_dim = embedding_dim / 2;
  // Same op order as diffusers so that the float32 values match bit for bit.
  at::Tensor exponent = at::arange(0, half_dim, at::TensorOptions().dtype(at::kFloat).device(timesteps.device()));
  exponent = exponent * (-std::log(max_period));
  exponent = exponent / (static_cast<double>(half_dim) - downscale_freq_shift);
  at::Tensor freqs = at::exp(exponent);
  at::Tensor emb = timesteps.unsqueeze(1).to(at::kFloat) * freqs.unsqueeze(0);  // [N, half]
  emb = emb * scale;
  emb = at::cat({at::sin(emb), at::cos(emb)}, -1);  // [N, 2*half]
  if (flip_sin_to_cos) emb = at::cat({emb.narrow(1, half_dim, half_dim), emb.narrow(1, 0, half_dim)}, -1);
  if (embedding_dim % 2 == 1) emb = at::constant_pad_nd(emb, {0, 1, 0, 0});
  return emb;
}

TimestepsImpl::TimestepsImpl(TimestepsOptions options_) : options(std::move(options_)) {}

at::Tensor TimestepsImpl::forward(const at::Tensor& timesteps) {
  return get_timestep_embedding(timesteps, options.num_channels(), options.flip_sin_to_cos(),
                                options.downscale_freq_shift(), options.scale());
}

TimestepEmbeddingImpl::TimestepEmbeddingImpl(TimestepEmbeddingOptions options_) : options(std::move(options_)) {
  check_activation(options.act_fn());
  if (options.post_act_fn()) check_activation(*options.post_act_fn());
  if (options.cond_proj_dim())
    cond_proj = register_module(
        "cond_proj", torch::nn::Linear(torch::nn::LinearOptions(*options.cond_proj_dim(), options.in_channels()).bias(false)));
  linear_1 = register_module("linear_1", torch::nn::Linear(torch::nn::LinearOptions(options.in_channels(), options.time_embed_dim())
                                                               .bias(options.sample_proj_bias())));
  const int64_t out = options.out_dim().value_or(options.time_embed_dim());
  linear_2 = register_module("linear_2", torch::nn::Linear(torch::nn::LinearOptions(options.time_embed_dim(), out)
                                                               .bias(options.sample_proj_bias())));
}

at::Tensor TimestepEmbeddingImpl::forward(const at::Tensor& sample_in, const at::Tensor& condition) {
  at::Tensor sample = sample_in;
  if (condition.defined()) {
    if (!cond_proj) throw ExecutionError("TimestepEmbedding: a condition was given but cond_proj_dim is not set");
    sample = sample + cond_proj(condition);
  }
  sample = linear_1(sample);
  sample = apply_activation(options.act_fn(), sample);
  sample = linear_2(sample);
  if (options.post_act_fn()) sample = apply_activation(*options.post_act_fn(), sample);
  return sample;
}

// ---- DiT conditioning embeddings ----

PixArtAlphaTextProjectionImpl::PixArtAlphaTextProjectionImpl(int64_t in_features, int64_t hidden_size,
                                                             std::optional<int64_t> out_features, std::string act_fn_)
    : act_fn(std::move(act_fn_)) {
  if (act_fn != "gelu_tanh" && act_fn != "silu")
    throw ModelLoadError("PixArtAlphaTextProjection: act_fn \"" + act_fn +
                         "\" is not supported (supported: \"gelu_tanh\", \"silu\")");
  linear_1 = register_module("linear_1", torch::nn::Linear(torch::nn::LinearOptions(in_features, hidden_size).bias(true)));
  linear_2 = register_module(
      "linear_2", torch::nn::Linear(torch::nn::LinearOptions(hidden_size, out_features.value_or(hidden_size)).bias(true)));
}

at::Tensor PixArtAlphaTextProjectionImpl::forward(const at::Tensor& caption) {
  at::Tensor hidden_states = linear_1(caption);
  hidden_states = act_fn == "silu" ? at::silu(hidden_states) : at::gelu(hidden_states, "tanh");
  return linear_2(hidden_states);
}

CombinedTimestepTextProjEmbeddingsImpl::CombinedTimestepTextProjEmbeddingsImpl(int64_t embedding_dim,
                                                                               int64_t pooled_projection_dim) {
  time_proj = register_module("time_proj", Timesteps(TimestepsOptions(256).flip_sin_to_cos(true).downscale_freq_shift(0)));
  timestep_embedder = register_module("timestep_embedder", TimestepEmbedding(TimestepEmbeddingOptions(256, embedding_dim)));
  text_embedder =
      register_module("text_embedder", PixArtAlphaTextProjection(pooled_projection_dim, embedding_dim, std::nullopt, "silu"));
}

at::Tensor CombinedTimestepTextProjEmbeddingsImpl::forward(const at::Tensor& timestep, const at::Tensor& pooled_projection) {
  at::Tensor timesteps_proj = time_proj(timestep);                                                  // [B, 256] float32
  at::Tensor timesteps_emb = timestep_embedder(timesteps_proj.to(pooled_projection.scalar_type()));  // [B, D]
  at::Tensor pooled_projections = text_embedder(pooled_projection);                                 // [B, D]
  return timesteps_emb + pooled_projections;
}

CombinedTimestepGuidanceTextProjEmbeddingsImpl::CombinedTimestepGuidanceTextProjEmbeddingsImpl(
    int64_t embedding_dim, int64_t pooled_projection_dim) {
  time_proj = register_module("time_proj", Timesteps(TimestepsOptions(256).flip_sin_to_cos(true).downscale_freq_shift(0)));
  timestep_embedder = register_module("timestep_embedder", TimestepEmbedding(TimestepEmbeddingOptions(256, embedding_dim)));
  guidance_embedder = register_module("guidance_embedder", TimestepEmbedding(TimestepEmbeddingOptions(256, embedding_dim)));
  text_embedder =
      register_module("text_embedder", PixArtAlphaTextProjection(pooled_projection_dim, embedding_dim, std::nullopt, "silu"));
}

at::Tensor CombinedTimestepGuidanceTextProjEmbeddingsImpl::forward(const at::Tensor& timestep, const at::Tensor& guidance,
                                                                   const at::Tensor& pooled_projection) {
  const auto dtype = pooled_projection.scalar_type();
  at::Tensor timesteps_emb = timestep_embedder(time_proj(timestep).to(dtype));  // [B, D]
  at::Tensor guidance_emb = guidance_embedder(time_proj(guidance).to(dtype));   // [B, D]
  at::Tensor time_guidance_emb = timesteps_emb + guidance_emb;
  at::Tensor pooled_projections = text_embedder(pooled_projection);             // [B, D]
  return time_guidance_emb + pooled_projections;
}

}  // namespace tessera
