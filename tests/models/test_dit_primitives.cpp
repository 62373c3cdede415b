// The shared DiT primitives (models/common/normalization.h, feed_forward.h, rotary_embedding.h and the DiT
// conditioning embeddings in embeddings.h) against values computed by hand or by a direct formula.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <cmath>

#include "tessera/error.h"
#include "models/common/embeddings.h"
#include "models/common/feed_forward.h"
#include "models/common/normalization.h"
#include "models/common/rotary_embedding.h"

using namespace tessera;

namespace {

at::Tensor vec(std::vector<float> v) { return torch::tensor(v, torch::kFloat); }

// Sets a modulation linear to weight 0 and the given bias, so its output is `bias` whatever the embedding.
void set_bias_only(torch::nn::Linear& linear, std::vector<float> bias) {
  torch::NoGradGuard ng;
  linear->weight.zero_();
  linear->bias.copy_(vec(bias));
}

// x = [1, 3]: LayerNorm without affine gives [-1, 1] / sqrt(1 + 1e-6).
const double kN = 1.0 / std::sqrt(1.0 + 1e-6);

bool close(const at::Tensor& a, const at::Tensor& b, double atol = 1e-6) {
  return a.sizes() == b.sizes() && torch::allclose(a.to(torch::kDouble), b.to(torch::kDouble), 0.0, atol);
}

}  // namespace

TEST_CASE("AdaLayerNormZero chunks its projection as shift, scale, gate, shift_mlp, scale_mlp, gate_mlp",
          "[model][dit]") {
  torch::NoGradGuard ng;
  AdaLayerNormZero norm(2);
  set_bias_only(norm->linear, {0.5f, -0.5f, 2.0f, 3.0f, 0.1f, 0.2f, 4.0f, 5.0f, 6.0f, 7.0f, 8.0f, 9.0f});
  at::Tensor x = vec({1.0f, 3.0f}).view({1, 1, 2});
  auto out = norm(x, torch::randn({1, 2}));
  // shift [0.5, -0.5], scale [2, 3]: n * (1 + scale) + shift
  CHECK(close(out.hidden_states, vec({float(-kN * 3 + 0.5), float(kN * 4 - 0.5)}).view({1, 1, 2})));
  CHECK(close(out.gate_msa, vec({0.1f, 0.2f}).view({1, 2})));
  CHECK(close(out.shift_mlp, vec({4.0f, 5.0f}).view({1, 2})));
  CHECK(close(out.scale_mlp, vec({6.0f, 7.0f}).view({1, 2})));
  CHECK(close(out.gate_mlp, vec({8.0f, 9.0f}).view({1, 2})));
  CHECK(norm->linear->weight.sizes() == at::IntArrayRef({12, 2}));
  CHECK_FALSE(norm->norm->options.elementwise_affine());
}

TEST_CASE("AdaLayerNormZeroSingle chunks shift, scale, gate", "[model][dit]") {
  torch::NoGradGuard ng;
  AdaLayerNormZeroSingle norm(2);
  set_bias_only(norm->linear, {0.5f, -0.5f, 2.0f, 3.0f, 0.1f, 0.2f});
  auto out = norm(vec({1.0f, 3.0f}).view({1, 1, 2}), torch::randn({1, 2}));
  CHECK(close(out.hidden_states, vec({float(-kN * 3 + 0.5), float(kN * 4 - 0.5)}).view({1, 1, 2})));
  CHECK(close(out.gate, vec({0.1f, 0.2f}).view({1, 2})));
}

TEST_CASE("SD35AdaLayerNormZeroX modulates the same norm twice with chunks 0-1 and 6-7", "[model][dit]") {
  torch::NoGradGuard ng;
  SD35AdaLayerNormZeroX norm(2);
  set_bias_only(norm->linear, {0.5f, -0.5f, 2.0f, 3.0f, 0.1f, 0.2f, 4.0f, 5.0f, 6.0f, 7.0f, 8.0f, 9.0f,
                               1.0f, 2.0f, -1.0f, 0.0f, 0.3f, 0.4f});
  auto out = norm(vec({1.0f, 3.0f}).view({1, 1, 2}), torch::randn({1, 2}));
  CHECK(close(out.hidden_states, vec({float(-kN * 3 + 0.5), float(kN * 4 - 0.5)}).view({1, 1, 2})));
  CHECK(close(out.gate_msa, vec({0.1f, 0.2f}).view({1, 2})));
  CHECK(close(out.shift_mlp, vec({4.0f, 5.0f}).view({1, 2})));
  CHECK(close(out.scale_mlp, vec({6.0f, 7.0f}).view({1, 2})));
  CHECK(close(out.gate_mlp, vec({8.0f, 9.0f}).view({1, 2})));
  // shift2 [1, 2], scale2 [-1, 0]
  CHECK(close(out.norm_hidden_states2, vec({1.0f, float(kN + 2)}).view({1, 1, 2})));
  CHECK(close(out.gate_msa2, vec({0.3f, 0.4f}).view({1, 2})));
}

TEST_CASE("AdaLayerNormContinuous chunks scale first, then shift", "[model][dit]") {
  torch::NoGradGuard ng;
  AdaLayerNormContinuous norm(2, 3, /*elementwise_affine=*/false, 1e-6);
  CHECK(norm->linear->weight.sizes() == at::IntArrayRef({4, 3}));
  set_bias_only(norm->linear, {2.0f, 3.0f, 0.5f, -0.5f});  // scale [2, 3], shift [0.5, -0.5]
  at::Tensor y = norm(vec({1.0f, 3.0f}).view({1, 1, 2}), torch::randn({1, 3}));
  CHECK(close(y, vec({float(-kN * 3 + 0.5), float(kN * 4 - 0.5)}).view({1, 1, 2})));

  AdaLayerNormContinuous affine(2, 3, /*elementwise_affine=*/true, 1e-6);
  auto names = affine->named_parameters().keys();
  CHECK(std::find(names.begin(), names.end(), "norm.weight") != names.end());
  CHECK(std::find(names.begin(), names.end(), "norm.bias") != names.end());
  CHECK_THROWS_AS(AdaLayerNormContinuous(2, 3, true, 1e-6, /*bias=*/false), ModelLoadError);
}

TEST_CASE("RMSNorm: both flavours agree in float32 with x * rsqrt(mean(x^2) + eps) * weight", "[model][dit]") {
  torch::NoGradGuard ng;
  for (auto flavor : {RMSNormFlavor::Diffusers, RMSNormFlavor::Torch}) {
    RMSNorm norm(RMSNormOptions(2).eps(1e-6).flavor(flavor));
    norm->weight.copy_(vec({2.0f, 0.5f}));
    at::Tensor y = norm(vec({3.0f, 4.0f}).view({1, 2}));
    const double r = 1.0 / std::sqrt(12.5 + 1e-6);
    CHECK(close(y, vec({float(3 * r * 2), float(4 * r * 0.5)}).view({1, 2})));
    CHECK(y.scalar_type() == torch::kFloat);
  }
  RMSNorm plain(RMSNormOptions(2).elementwise_affine(false));
  CHECK_FALSE(plain->weight.defined());
  CHECK(plain->named_parameters().size() == 0);
  CHECK(close(plain(vec({3.0f, 4.0f})), vec({float(3 / std::sqrt(12.5 + 1e-6)), float(4 / std::sqrt(12.5 + 1e-6))})));
}

TEST_CASE("RMSNorm flavours differ in bfloat16 the way diffusers' and torch's RMSNorm do", "[model][dit]") {
  torch::NoGradGuard ng;
  torch::manual_seed(3);
  at::Tensor x = torch::randn({64, 16}).to(torch::kBFloat16);
  at::Tensor w = (1 + 0.3 * torch::randn({16})).to(torch::kBFloat16);
  at::Tensor xf = x.to(torch::kFloat);
  at::Tensor rrms = torch::rsqrt(xf.pow(2).mean({-1}, true) + 1e-6);

  RMSNorm diff(RMSNormOptions(16).flavor(RMSNormFlavor::Diffusers));
  RMSNorm tor(RMSNormOptions(16).flavor(RMSNormFlavor::Torch));
  diff->to(torch::kBFloat16);
  tor->to(torch::kBFloat16);
  diff->weight.copy_(w);
  tor->weight.copy_(w);
  at::Tensor yd = diff(x), yt = tor(x);
  REQUIRE(yd.scalar_type() == torch::kBFloat16);
  REQUIRE(yt.scalar_type() == torch::kBFloat16);
  // diffusers: normalised value rounded to bf16, then a bf16 multiply; torch: one rounding at the end.
  CHECK(torch::equal(yd, (xf * rrms).to(torch::kBFloat16) * w));
  CHECK(torch::equal(yt, (xf * rrms * w.to(torch::kFloat)).to(torch::kBFloat16)));
  CHECK_FALSE(torch::equal(yd, yt));

  // diffusers' RMSNorm keeps float32 when the weight is float32 and the input is bf16.
  RMSNorm diff32(RMSNormOptions(16));
  CHECK(diff32(x).scalar_type() == torch::kFloat);
  RMSNorm tor32(RMSNormOptions(16).flavor(RMSNormFlavor::Torch));
  CHECK(tor32(x).scalar_type() == torch::kBFloat16);
}

TEST_CASE("get_1d_rotary_pos_embed matches cos/sin(pos * theta^(-2i/dim))", "[model][dit][rope]") {
  at::Tensor pos = vec({0.0f, 1.0f, 2.5f, 17.25f});
  const int64_t dim = 6;
  auto [cos_i, sin_i] = get_1d_rotary_pos_embed(dim, pos, 10000.0, true, torch::kDouble);
  auto [cos_c, sin_c] = get_1d_rotary_pos_embed(dim, pos, 10000.0, false, torch::kDouble);
  REQUIRE(cos_i.sizes() == at::IntArrayRef({4, 6}));
  CHECK(cos_i.scalar_type() == torch::kFloat);
  for (int64_t s = 0; s < 4; ++s)
    for (int64_t i = 0; i < dim / 2; ++i) {
      const double a = pos[s].item<float>() * std::pow(10000.0, -2.0 * i / dim);
      CHECK(cos_i[s][2 * i].item<float>() == Approx(std::cos(a)).margin(1e-7));
      CHECK(cos_i[s][2 * i + 1].item<float>() == Approx(std::cos(a)).margin(1e-7));
      CHECK(sin_i[s][2 * i].item<float>() == Approx(std::sin(a)).margin(1e-7));
      CHECK(sin_i[s][2 * i + 1].item<float>() == Approx(std::sin(a)).margin(1e-7));
      CHECK(cos_c[s][i].item<float>() == Approx(std::cos(a)).margin(1e-7));
      CHECK(cos_c[s][i + dim / 2].item<float>() == Approx(std::cos(a)).margin(1e-7));
      CHECK(sin_c[s][i + dim / 2].item<float>() == Approx(std::sin(a)).margin(1e-7));
    }
  CHECK_THROWS(get_1d_rotary_pos_embed(5, pos, 10000.0, true, torch::kDouble));
}

TEST_CASE("apply_rotary_emb rotates pairs (2i, 2i+1) or halves (i, i+D/2) as the direct formula", "[model][dit][rope]") {
  torch::manual_seed(0);
  const int64_t S = 3, D = 4;
  at::Tensor pos = vec({0.0f, 1.0f, 5.0f});
  at::Tensor x = torch::randn({1, 2, S, D});  // [B, H, S, D]
  auto freqs = get_1d_rotary_pos_embed(D, pos, 10000.0, true, torch::kDouble);
  at::Tensor y = apply_rotary_emb(x, freqs, true, 2);
  auto halves = get_1d_rotary_pos_embed(D, pos, 10000.0, false, torch::kDouble);
  at::Tensor y2 = apply_rotary_emb(x, halves, false, 2);
  for (int64_t h = 0; h < 2; ++h)
    for (int64_t s = 0; s < S; ++s)
      for (int64_t i = 0; i < D / 2; ++i) {
        const double a = pos[s].item<float>() * std::pow(10000.0, -2.0 * i / D);
        const double c = std::cos(a), sn = std::sin(a);
        const double x0 = x[0][h][s][2 * i].item<float>(), x1 = x[0][h][s][2 * i + 1].item<float>();
        CHECK(y[0][h][s][2 * i].item<float>() == Approx(x0 * c - x1 * sn).margin(1e-6));
        CHECK(y[0][h][s][2 * i + 1].item<float>() == Approx(x1 * c + x0 * sn).margin(1e-6));
        const double u0 = x[0][h][s][i].item<float>(), u1 = x[0][h][s][i + D / 2].item<float>();
        CHECK(y2[0][h][s][i].item<float>() == Approx(u0 * c - u1 * sn).margin(1e-6));
        CHECK(y2[0][h][s][i + D / 2].item<float>() == Approx(u1 * c + u0 * sn).margin(1e-6));
      }
  // sequence_dim 1 ([B, S, H, D]) is the same rotation.
  at::Tensor y_seq1 = apply_rotary_emb(x.transpose(1, 2).contiguous(), freqs, true, 1);
  CHECK(torch::equal(y_seq1.transpose(1, 2), y));
  // bf16 input: computed in float32, returned in bf16.
  CHECK(apply_rotary_emb(x.to(torch::kBFloat16), freqs).scalar_type() == torch::kBFloat16);
}

TEST_CASE("FluxPosEmbed concatenates the per-axis embeddings of float ids", "[model][dit][rope]") {
  FluxPosEmbed pe(10000.0, std::vector<int64_t>{2, 4});
  at::Tensor ids = torch::tensor({0.0f, 1.0f, 3.0f, 0.5f, 2.0f, 7.0f}).view({3, 2});
  auto [cos, sin] = pe(ids);
  REQUIRE(cos.sizes() == at::IntArrayRef({3, 6}));
  auto a0 = get_1d_rotary_pos_embed(2, ids.select(1, 0), 10000.0, true, torch::kDouble);
  auto a1 = get_1d_rotary_pos_embed(4, ids.select(1, 1), 10000.0, true, torch::kDouble);
  CHECK(torch::equal(cos, torch::cat({a0.first, a1.first}, -1)));
  CHECK(torch::equal(sin, torch::cat({a0.second, a1.second}, -1)));
  CHECK(sin[2][4].item<float>() == Approx(std::sin(7.0 * std::pow(10000.0, -0.5))).margin(1e-7));
  CHECK_THROWS(pe(torch::zeros({3, 3})));
  CHECK_THROWS_AS(FluxPosEmbed(10000.0, std::vector<int64_t>{3, 4}), ModelLoadError);
}

TEST_CASE("FeedForward: keys, shapes and the gelu / gelu-approximate / geglu activations", "[model][dit]") {
  torch::NoGradGuard ng;
  // gelu-approximate with net.0.proj = identity and net.2 = identity: the tanh-GELU of the input.
  FeedForward ff(FeedForwardOptions(3).inner_dim(3).activation_fn("gelu-approximate"));
  auto params = ff->named_parameters();
  REQUIRE(params.contains("net.0.proj.weight"));
  REQUIRE(params.contains("net.2.bias"));
  params["net.0.proj.weight"].copy_(torch::eye(3));
  params["net.0.proj.bias"].zero_();
  params["net.2.weight"].copy_(torch::eye(3));
  params["net.2.bias"].zero_();
  at::Tensor x = vec({-1.5f, 0.3f, 2.0f});
  at::Tensor y = ff(x);
  for (int i = 0; i < 3; ++i) {
    const double v = x[i].item<float>();
    const double tanh_gelu = 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
    CHECK(y[i].item<float>() == Approx(tanh_gelu).margin(1e-6));
  }
  FeedForward exact(FeedForwardOptions(3).inner_dim(3).activation_fn("gelu"));
  auto p2 = exact->named_parameters();
  p2["net.0.proj.weight"].copy_(torch::eye(3));
  p2["net.0.proj.bias"].zero_();
  p2["net.2.weight"].copy_(torch::eye(3));
  p2["net.2.bias"].zero_();
  at::Tensor ye = exact(x);
  for (int i = 0; i < 3; ++i) {
    const double v = x[i].item<float>();
    CHECK(ye[i].item<float>() == Approx(0.5 * v * (1 + std::erf(v / std::sqrt(2.0)))).margin(1e-6));
  }
  CHECK_FALSE(torch::allclose(y, ye, 0, 1e-5));  // the two GELUs differ at these points

  // Default mult 4 and dim_out; the UNet's constructor is GEGLU (proj to 2*inner).
  FeedForward dflt(FeedForwardOptions(8).dim_out(5).activation_fn("gelu-approximate").bias(false));
  CHECK(dflt->named_parameters()["net.0.proj.weight"].sizes() == at::IntArrayRef({32, 8}));
  CHECK(dflt->named_parameters()["net.2.weight"].sizes() == at::IntArrayRef({5, 32}));
  CHECK_FALSE(dflt->named_parameters().contains("net.2.bias"));
  CHECK(dflt(torch::randn({2, 7, 8})).sizes() == at::IntArrayRef({2, 7, 5}));
  FeedForward unet(4, 16);
  CHECK(unet->named_parameters()["net.0.proj.weight"].sizes() == at::IntArrayRef({32, 4}));
  // geglu = hidden * gelu(gate) with hidden, gate the two halves of the projection.
  at::Tensor h = torch::randn({2, 4});
  at::Tensor proj = unet->net_0_geglu->proj(h);
  at::Tensor expected = unet->net_2(proj.narrow(1, 0, 16) * torch::gelu(proj.narrow(1, 16, 16)));
  CHECK(torch::allclose(unet(h), expected));
  CHECK_THROWS_AS(FeedForward(FeedForwardOptions(4).activation_fn("swiglu")), ModelLoadError);
}

TEST_CASE("CombinedTimestep(Guidance)TextProjEmbeddings: keys and t_emb (+ g_emb) + text_emb", "[model][dit]") {
  torch::NoGradGuard ng;
  torch::manual_seed(1);
  CombinedTimestepTextProjEmbeddings emb(8, 6);
  auto names = emb->named_parameters().keys();
  for (const char* k : {"timestep_embedder.linear_1.weight", "timestep_embedder.linear_2.bias",
                        "text_embedder.linear_1.weight", "text_embedder.linear_2.weight"})
    CHECK(std::find(names.begin(), names.end(), k) != names.end());
  CHECK(emb->timestep_embedder->linear_1->weight.sizes() == at::IntArrayRef({8, 256}));
  at::Tensor t = vec({0.0f, 500.0f, 999.0f});
  at::Tensor pooled = torch::randn({3, 6});
  at::Tensor out = emb(t, pooled);
  REQUIRE(out.sizes() == at::IntArrayRef({3, 8}));
  at::Tensor t_emb = emb->timestep_embedder(get_timestep_embedding(t, 256, true, 0.0));
  at::Tensor txt = emb->text_embedder->linear_2(torch::silu(emb->text_embedder->linear_1(pooled)));
  CHECK(torch::allclose(out, t_emb + txt));

  CombinedTimestepGuidanceTextProjEmbeddings gemb(8, 6);
  CHECK(gemb->named_parameters().contains("guidance_embedder.linear_1.weight"));
  at::Tensor g = vec({3500.0f, 3500.0f, 1000.0f});
  at::Tensor gout = gemb(t, g, pooled);
  at::Tensor g_emb = gemb->guidance_embedder(get_timestep_embedding(g, 256, true, 0.0));
  at::Tensor t2 = gemb->timestep_embedder(get_timestep_embedding(t, 256, true, 0.0));
  at::Tensor txt2 = gemb->text_embedder(pooled);
  CHECK(torch::allclose(gout, (t2 + g_emb) + txt2));
  CHECK_FALSE(torch::allclose(gout, t2 + txt2, 0, 1e-4));  // guidance matters

  PixArtAlphaTextProjection gelu_proj(6, 4, 2);
  CHECK(gelu_proj(pooled).sizes() == at::IntArrayRef({3, 2}));
  at::Tensor hh = gelu_proj->linear_1(pooled);
  CHECK(torch::allclose(gelu_proj(pooled), gelu_proj->linear_2(torch::gelu(hh, "tanh"))));
  CHECK_THROWS_AS(PixArtAlphaTextProjection(6, 4, std::nullopt, "relu"), ModelLoadError);
}
