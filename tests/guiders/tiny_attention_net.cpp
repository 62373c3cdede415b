#include "tests/guiders/tiny_attention_net.h"

#include <cmath>

#include "guiders/smoothed_energy_guidance.h"

namespace tessera::testing {

namespace {

// Fixed, well-conditioned weights: a smooth function of the element index, different per matrix.
at::Tensor fixed_weight(int64_t rows, int64_t cols, double phase) {
  at::Tensor i = at::arange(rows * cols, at::kDouble).view({rows, cols});
  return (at::sin(i * 0.731 + phase) * (1.0 / std::sqrt(static_cast<double>(rows)))).to(at::kFloat);
}

at::Tensor layer_norm(const at::Tensor& x) { return at::layer_norm(x, {x.size(-1)}); }

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  at::Tensor scores = at::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(q.size(-1)));
  return at::matmul(at::softmax(scores, -1), v);
}

}  // namespace

TinyAttentionNet::TinyAttentionNet(int64_t dim) : dim_(dim) {
  for (int b = 0; b < 2; ++b) {
    const double p = 10.0 * b;
    blocks_.push_back({fixed_weight(dim, dim, p + 0.1), fixed_weight(dim, dim, p + 1.3), fixed_weight(dim, dim, p + 2.2),
                       fixed_weight(dim, dim, p + 3.7), fixed_weight(dim, dim, p + 4.1), fixed_weight(dim, dim, p + 5.9),
                       fixed_weight(dim, dim, p + 6.3), fixed_weight(dim, dim, p + 7.7),
                       fixed_weight(dim, 2 * dim, p + 8.5), fixed_weight(2 * dim, dim, p + 9.1)});
  }
}

at::Tensor TinyAttentionNet::self_attention(int64_t index, const at::Tensor& n,
                                            const std::vector<LayerHook>& hooks) const {
  const Weights& w = blocks_[static_cast<size_t>(index)];
  at::Tensor q = at::matmul(n, w.q), k = at::matmul(n, w.k), v = at::matmul(n, w.v);
  at::Tensor a = attention(q, k, v);
  for (const LayerHook* h : hooks_for(hooks, LayerHookKind::IdentityAttention, kStack, index))
    a = replace_hook_rows(a, *h, [&](int64_t b, int64_t e) { return v.narrow(0, b, e - b); });
  for (const LayerHook* h : hooks_for(hooks, LayerHookKind::SmoothedEnergyBlur, kStack, index))
    a = replace_hook_rows(a, *h, [&](int64_t b, int64_t e) {
      at::Tensor blurred = smoothed_energy_blur(q.narrow(0, b, e - b), h->blur_sigma, h->blur_threshold_inf);
      return attention(blurred, k.narrow(0, b, e - b), v.narrow(0, b, e - b));
    });
  at::Tensor out = at::matmul(a, w.o);
  for (const LayerHook* h : hooks_for(hooks, LayerHookKind::SkipAttention, kStack, index))
    out = replace_hook_rows(out, *h, [&](int64_t b, int64_t e) {
      return skip_or_dropout(out.narrow(0, b, e - b), n.narrow(0, b, e - b), h->dropout);
    });
  return out;
}

at::Tensor TinyAttentionNet::block(int64_t index, const at::Tensor& x, const at::Tensor& ehs,
                                   const std::vector<LayerHook>& hooks) const {
  const Weights& w = blocks_[static_cast<size_t>(index)];
  at::Tensor h = x + self_attention(index, layer_norm(x), hooks);
  // Cross-attention is never perturbed: diffusers' hooks skip modules with is_cross_attention.
  at::Tensor n2 = layer_norm(h);
  h = h + at::matmul(attention(at::matmul(n2, w.cq), at::matmul(ehs, w.ck), at::matmul(ehs, w.cv)), w.co);
  at::Tensor n3 = layer_norm(h);
  at::Tensor ff = at::matmul(at::gelu(at::matmul(n3, w.ff1)), w.ff2);
  for (const LayerHook* hk : hooks_for(hooks, LayerHookKind::SkipFeedForward, kStack, index))
    ff = replace_hook_rows(ff, *hk, [&](int64_t b, int64_t e) {
      return skip_or_dropout(ff.narrow(0, b, e - b), n3.narrow(0, b, e - b), hk->dropout);
    });
  h = h + ff;
  for (const LayerHook* hk : hooks_for(hooks, LayerHookKind::SkipBlock, kStack, index))
    h = replace_hook_rows(h, *hk, [&](int64_t b, int64_t e) {
      return skip_or_dropout(h.narrow(0, b, e - b), x.narrow(0, b, e - b), hk->dropout);
    });
  return h;
}

at::Tensor TinyAttentionNet::forward(const at::Tensor& hidden_states, const at::Tensor& encoder_hidden_states,
                                     const std::vector<LayerHook>& hooks) const {
  at::Tensor h = hidden_states;
  for (int64_t i = 0; i < static_cast<int64_t>(blocks_.size()); ++i) h = block(i, h, encoder_hidden_states, hooks);
  return h;
}

GuiderModelFn TinyAttentionNet::model_fn() {
  return [this](const std::map<std::string, at::Tensor>& inputs, const std::vector<LayerHook>& hooks) {
    ++calls_;
    call_batches_.push_back(inputs.at("hidden_states").size(0));
    return forward(inputs.at("hidden_states"), inputs.at("encoder_hidden_states"), hooks);
  };
}

}  // namespace tessera::testing
