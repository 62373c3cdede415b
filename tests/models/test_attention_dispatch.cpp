// dispatch_attention: every backend computes the same attention (with and without masks, custom scales,
// chunk boundaries), and the global default / per-call override select them.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <cmath>

#include "models/common/attention_dispatch.h"
#include "models/common/flash_attention.h"

using namespace tessera;

namespace {

// Reference: plain float64 softmax(QK^T * scale + mask) V.
at::Tensor reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                     double scale) {
  at::Tensor s = at::matmul(q.to(at::kDouble), k.to(at::kDouble).transpose(-2, -1)) * scale;
  if (mask.defined()) {
    if (mask.scalar_type() == at::kBool) s = s.masked_fill(mask.logical_not(), -INFINITY);
    else s = s + mask.to(at::kDouble);
  }
  return at::matmul(at::softmax(s, -1), v.to(at::kDouble)).to(q.scalar_type());
}

const AttentionBackend kBackends[] = {AttentionBackend::Math, AttentionBackend::Sdpa, AttentionBackend::Chunked,
                                     AttentionBackend::Flash};

}  // namespace

TEST_CASE("attention backends agree with the reference, with and without masks", "[model][attention]") {
  torch::manual_seed(0);
  const int64_t B = 2, H = 3, Lq = 37, Lk = 19, D = 8;
  at::Tensor q = torch::randn({B, H, Lq, D}), k = torch::randn({B, H, Lk, D}), v = torch::randn({B, H, Lk, D});
  at::Tensor bool_mask = torch::rand({B, 1, Lq, Lk}) > 0.3;
  bool_mask.select(-1, 0).fill_(true);  // every row keeps at least one key
  at::Tensor key_padding = torch::ones({B, 1, 1, Lk}, torch::kBool);
  key_padding.index_put_({0, 0, 0, torch::indexing::Slice(10, Lk)}, false);
  at::Tensor float_mask = torch::where(bool_mask, torch::zeros({}), torch::full({}, -10000.0));
  const int64_t saved_chunk = attention_chunk_size();
  set_attention_chunk_size(8);  // several chunks and a ragged last one
  set_flash_attention_tiles(16, 8);  // flash: 3 query tiles (the last ragged) x 3 key tiles (the last ragged)

  struct Variant {
    const char* name;
    at::Tensor mask;
    std::optional<double> scale;
  };
  for (const auto& variant : {Variant{"no mask", {}, std::nullopt}, Variant{"bool mask", bool_mask, std::nullopt},
                              Variant{"key padding", key_padding, 0.5}, Variant{"additive mask", float_mask, 0.2}}) {
    const double scale = variant.scale.value_or(1.0 / std::sqrt(double(D)));
    at::Tensor expected = reference(q, k, v, variant.mask, scale);
    for (auto backend : kBackends) {
      INFO(variant.name << " / " << attention_backend_name(backend));
      at::Tensor got = dispatch_attention(q, k, v, variant.mask, variant.scale, backend);
      REQUIRE(got.sizes() == expected.sizes());
      CHECK((got - expected).abs().max().item<double>() < 1e-5);
    }
  }
  set_attention_chunk_size(saved_chunk);
  set_flash_attention_tiles(0, 0);
}

TEST_CASE("flash attention: exact to float32 rounding against math on UNet-like strided inputs", "[model][attention]") {
  REQUIRE(flash_attention_available());  // Debian's libdnnl-dev is a build dependency
  torch::manual_seed(3);
  // [B, L, heads*D] projections viewed as [B, heads, L, D] (non-contiguous), as the attention processors pass them.
  const int64_t B = 2, H = 3, L = 300, D = 40;
  auto heads = [&](int64_t len) { return torch::randn({B, len, H * D}).view({B, len, H, D}).transpose(1, 2); };
  at::Tensor q = heads(L), k = heads(L), v = heads(L), k_text = heads(77), v_text = heads(77);
  for (auto tiles : {std::pair<int64_t, int64_t>{0, 0}, {64, 128}, {7, 33}}) {
    set_flash_attention_tiles(tiles.first, tiles.second);
    INFO("tiles " << tiles.first << "x" << tiles.second);
    at::Tensor self_ref = reference(q, k, v, {}, 0.125), cross_ref = reference(q, k_text, v_text, {}, 0.125);
    CHECK((dispatch_attention(q, k, v, {}, 0.125, AttentionBackend::Flash) - self_ref).abs().max().item<double>() < 2e-6);
    CHECK((dispatch_attention(q, k_text, v_text, {}, 0.125, AttentionBackend::Flash) - cross_ref).abs().max().item<double>() <
          2e-6);
  }
  set_flash_attention_tiles(0, 0);
  // Large score ranges: the online softmax rescales without overflow where a naive exp would.
  at::Tensor big = q * 40.0;
  at::Tensor out = dispatch_attention(big, k, v, {}, {}, AttentionBackend::Flash);
  CHECK(torch::isfinite(out).all().item<bool>());
  CHECK((out - reference(big, k, v, {}, 1.0 / std::sqrt(double(D)))).abs().max().item<double>() < 1e-4);
}

TEST_CASE("flash attention: fully masked rows give NaN as math does; reduced dtypes come back in their dtype",
          "[model][attention]") {
  torch::manual_seed(4);
  at::Tensor q = torch::randn({1, 2, 20, 8}), k = torch::randn({1, 2, 24, 8}), v = torch::randn({1, 2, 24, 8});
  at::Tensor mask = torch::ones({1, 1, 20, 24}, torch::kBool);
  mask.index_put_({0, 0, 3}, false);                                     // row 3 sees no key
  mask.index_put_({0, 0, 5, torch::indexing::Slice(0, 16)}, false);      // row 5 only sees the last key tile
  set_flash_attention_tiles(8, 8);
  at::Tensor math = dispatch_attention(q, k, v, mask, {}, AttentionBackend::Math);
  at::Tensor flash = dispatch_attention(q, k, v, mask, {}, AttentionBackend::Flash);
  set_flash_attention_tiles(0, 0);
  CHECK(torch::isnan(math.select(2, 3)).all().item<bool>());
  CHECK(torch::isnan(flash.select(2, 3)).all().item<bool>());
  at::Tensor keep = torch::ones({20}, torch::kBool);
  keep[3] = false;
  CHECK((flash.index({torch::indexing::Slice(), torch::indexing::Slice(), keep}) -
         math.index({torch::indexing::Slice(), torch::indexing::Slice(), keep}))
            .abs()
            .max()
            .item<double>() < 1e-6);
  for (auto dtype : {at::kBFloat16, at::kHalf}) {
    at::Tensor got = dispatch_attention(q.to(dtype), k.to(dtype), v.to(dtype), {}, {}, AttentionBackend::Flash);
    CHECK(got.scalar_type() == dtype);
    at::Tensor want = reference(q.to(dtype).to(at::kFloat), k.to(dtype).to(at::kFloat), v.to(dtype).to(at::kFloat), {},
                                1.0 / std::sqrt(8.0));
    CHECK((got.to(at::kFloat) - want).abs().max().item<double>() < 2e-2);  // one rounding to the reduced type
  }
}

TEST_CASE("attention: Auto picks flash on the CPU, math where flash cannot run", "[model][attention]") {
  at::Tensor q = torch::randn({1, 1, 4, 4});
  CHECK(resolve_attention_backend(AttentionBackend::Auto, q, q, q) == AttentionBackend::Flash);
  CHECK(resolve_attention_backend(AttentionBackend::Math, q, q, q) == AttentionBackend::Math);
  at::Tensor g = q.clone().requires_grad_(true);
  CHECK(resolve_attention_backend(AttentionBackend::Auto, g, q, q) == AttentionBackend::Math);  // no backward
  CHECK(resolve_attention_backend(AttentionBackend::Flash, g, q, q) == AttentionBackend::Math);
  {
    torch::NoGradGuard no_grad;
    CHECK(resolve_attention_backend(AttentionBackend::Auto, g, q, q) == AttentionBackend::Flash);
  }
  at::Tensor d = q.to(at::kDouble);
  CHECK(resolve_attention_backend(AttentionBackend::Auto, d, d, d) == AttentionBackend::Math);
  // Gradients still flow through Auto (math).
  dispatch_attention(g, q, q).sum().backward();
  CHECK(g.grad().defined());
}

TEST_CASE("attention: value head dim may differ; half precision keeps its dtype", "[model][attention]") {
  torch::manual_seed(1);
  at::Tensor q = torch::randn({1, 2, 5, 4}), k = torch::randn({1, 2, 6, 4}), v = torch::randn({1, 2, 6, 3});
  for (auto backend : kBackends) CHECK(dispatch_attention(q, k, v, {}, {}, backend).sizes() == at::IntArrayRef{1, 2, 5, 3});
  at::Tensor out = dispatch_attention(q.to(at::kBFloat16), k.to(at::kBFloat16), v.to(at::kBFloat16), {}, {},
                                      AttentionBackend::Math);
  CHECK(out.scalar_type() == at::kBFloat16);
  CHECK_THROWS(dispatch_attention(q.squeeze(0), k, v));
}

TEST_CASE("attention: global default and per-call override", "[model][attention]") {
  CHECK(default_attention_backend() == AttentionBackend::Auto);
  set_default_attention_backend(AttentionBackend::Chunked);
  CHECK(default_attention_backend() == AttentionBackend::Chunked);
  torch::manual_seed(2);
  at::Tensor q = torch::randn({1, 1, 4, 4});
  CHECK(dispatch_attention(q, q, q).allclose(dispatch_attention(q, q, q, {}, {}, AttentionBackend::Math), 1e-6, 1e-6));
  set_default_attention_backend(AttentionBackend::Auto);  // back to the per-call choice
  CHECK(default_attention_backend() == AttentionBackend::Auto);
  CHECK(attention_backend_from_name("sdpa") == AttentionBackend::Sdpa);
  CHECK(attention_backend_from_name("flash") == AttentionBackend::Flash);
  CHECK_FALSE(attention_backend_from_name("xformers").has_value());
  CHECK(sdpa_available());  // LibTorch 1.13 has at::_scaled_dot_product_attention
}
