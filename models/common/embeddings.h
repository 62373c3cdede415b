#pragma once
/// Timestep embeddings as in diffusers' models/embeddings.py: the sinusoidal projection (`Timesteps`, no
/// weights) and the MLP that follows it (`TimestepEmbedding`, state-dict keys linear_1 / linear_2 / cond_proj);
/// the DiT conditioning embeddings (PixArtAlphaTextProjection, CombinedTimestep[Guidance]TextProjEmbeddings).
///
///   Timesteps proj(TimestepsOptions(320).flip_sin_to_cos(true));
///   TimestepEmbedding emb(TimestepEmbeddingOptions(320, 1280));
///   at::Tensor temb = emb(proj(t));  // [B, 1280]
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <optional>
#include <string>

namespace tessera {

/// diffusers' get_timestep_embedding: [N] timesteps → [N, embedding_dim] sin/cos features (float32).
/// exponent_i = -ln(max_period) * i / (half - downscale_freq_shift); flip puts cos first; odd dims are zero-padded.
at::Tensor get_timestep_embedding(const at::Tensor& timesteps, int64_t embedding_dim, bool flip_sin_to_cos,
                                  double downscale_freq_shift, double scale = 1.0, double max_period = 10000.0);

/// Options of the weightless sinusoidal projection.
struct TimestepsOptions {
  explicit TimestepsOptions(int64_t num_channels) : num_channels_(num_channels) {}
  TORCH_ARG(int64_t, num_channels);
  TORCH_ARG(bool, flip_sin_to_cos) = true;
  TORCH_ARG(double, downscale_freq_shift) = 0.0;
  TORCH_ARG(double, scale) = 1.0;
};

/// diffusers' Timesteps module (no parameters).
class TimestepsImpl : public torch::nn::Module {
 public:
  explicit TimestepsImpl(TimestepsOptions options);
  /// [N] → [N, num_channels] float32.
  at::Tensor forward(const at::Tensor& timesteps);
  TimestepsOptions options;
};
TORCH_MODULE(Timesteps);

/// Options of diffusers' TimestepEmbedding (in_channels → time_embed_dim MLP).
struct TimestepEmbeddingOptions {
  TimestepEmbeddingOptions(int64_t in_channels, int64_t time_embed_dim)
      : in_channels_(in_channels), time_embed_dim_(time_embed_dim) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, time_embed_dim);
  TORCH_ARG(std::string, act_fn) = "silu";
  TORCH_ARG(std::optional<int64_t>, out_dim) = std::nullopt;
  TORCH_ARG(std::optional<std::string>, post_act_fn) = std::nullopt;
  TORCH_ARG(std::optional<int64_t>, cond_proj_dim) = std::nullopt;  ///< LCM's timestep_cond (cond_proj, no bias)
  TORCH_ARG(bool, sample_proj_bias) = true;
};

/// diffusers' TimestepEmbedding: [cond_proj(condition) +] sample → linear_1 → act → linear_2 [→ post_act].
class TimestepEmbeddingImpl : public torch::nn::Module {
 public:
  explicit TimestepEmbeddingImpl(TimestepEmbeddingOptions options);
  /// sample [B, in_channels], condition [B, cond_proj_dim] or undefined → [B, out_dim or time_embed_dim].
  at::Tensor forward(const at::Tensor& sample, const at::Tensor& condition = {});

  TimestepEmbeddingOptions options;
  torch::nn::Linear cond_proj{nullptr};
  torch::nn::Linear linear_1{nullptr};
  torch::nn::Linear linear_2{nullptr};
};
TORCH_MODULE(TimestepEmbedding);

/// diffusers' PixArtAlphaTextProjection: linear_1 (in → hidden), act ("gelu_tanh" | "silu"; others are a
/// ModelLoadError), linear_2 (hidden → out_features, default hidden).
class PixArtAlphaTextProjectionImpl : public torch::nn::Module {
 public:
  PixArtAlphaTextProjectionImpl(int64_t in_features, int64_t hidden_size, std::optional<int64_t> out_features = {},
                                std::string act_fn = "gelu_tanh");
  /// caption [..., in_features] → [..., out_features].
  at::Tensor forward(const at::Tensor& caption);

  std::string act_fn;
  torch::nn::Linear linear_1{nullptr};
  torch::nn::Linear linear_2{nullptr};
};
TORCH_MODULE(PixArtAlphaTextProjection);

/// diffusers' CombinedTimestepTextProjEmbeddings (SD3, FLUX schnell): time_proj = Timesteps(256, flip, shift 0),
/// timestep_embedder = TimestepEmbedding(256, D), text_embedder = PixArtAlphaTextProjection(P, D, "silu");
/// conditioning = timestep_embedder(time_proj(t) cast to pooled's dtype) + text_embedder(pooled).
class CombinedTimestepTextProjEmbeddingsImpl : public torch::nn::Module {
 public:
  CombinedTimestepTextProjEmbeddingsImpl(int64_t embedding_dim, int64_t pooled_projection_dim);
  /// timestep [B], pooled_projection [B, P] → [B, D].
  at::Tensor forward(const at::Tensor& timestep, const at::Tensor& pooled_projection);

  Timesteps time_proj{nullptr};
  TimestepEmbedding timestep_embedder{nullptr};
  PixArtAlphaTextProjection text_embedder{nullptr};
};
TORCH_MODULE(CombinedTimestepTextProjEmbeddings);

/// diffusers' CombinedTimestepGuidanceTextProjEmbeddings (FLUX dev): as above plus guidance_embedder =
/// TimestepEmbedding(256, D) on time_proj(guidance); conditioning = (t_emb + g_emb) + text_emb.
class CombinedTimestepGuidanceTextProjEmbeddingsImpl : public torch::nn::Module {
 public:
  CombinedTimestepGuidanceTextProjEmbeddingsImpl(int64_t embedding_dim, int64_t pooled_projection_dim);
  /// timestep [B], guidance [B], pooled_projection [B, P] → [B, D].
  at::Tensor forward(const at::Tensor& timestep, const at::Tensor& guidance, const at::Tensor& pooled_projection);

  Timesteps time_proj{nullptr};
  TimestepEmbedding timestep_embedder{nullptr};
  TimestepEmbedding guidance_embedder{nullptr};
  PixArtAlphaTextProjection text_embedder{nullptr};
};
TORCH_MODULE(CombinedTimestepGuidanceTextProjEmbeddings);

}  // namespace tessera
