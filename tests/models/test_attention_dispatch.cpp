// dispatch_attention: every backend computes the same attention (with and without masks, custom scales,
// chunk boundaries), and the global default / per-call override select them.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <cmath>

#include "models/common/attention_dispatch.h"

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

const AttentionBackend kBackends[] = {AttentionBackend::Math, AttentionBackend::Sdpa, AttentionBackend::Chunked};

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
  CHECK(default_attention_backend() == AttentionBackend::Math);
  set_default_attention_backend(AttentionBackend::Chunked);
  CHECK(default_attention_backend() == AttentionBackend::Chunked);
  torch::manual_seed(2);
  at::Tensor q = torch::randn({1, 1, 4, 4});
  CHECK(dispatch_attention(q, q, q).allclose(dispatch_attention(q, q, q, {}, {}, AttentionBackend::Math), 1e-6, 1e-6));
  set_default_attention_backend(AttentionBackend::Auto);  // Auto resets to Math
  CHECK(default_attention_backend() == AttentionBackend::Math);
  CHECK(attention_backend_from_name("sdpa") == AttentionBackend::Sdpa);
  CHECK_FALSE(attention_backend_from_name("flash").has_value());
  CHECK(sdpa_available());  // LibTorch 1.13 has at::_scaled_dot_product_attention
}
