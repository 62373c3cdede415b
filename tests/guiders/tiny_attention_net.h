#pragma once
// A deterministic stand-in denoiser for guider tests: two transformer blocks ("transformer_blocks.0", ".1"), each
// self-attention, cross-attention and feed-forward with fixed weights (no RNG), built from ATen ops. It honours
// LayerHooks per batch slice the way a real model must: compute the normal output for the whole batch, then
// replace only the hooked rows.
#include <ATen/ATen.h>

#include <vector>

#include "guiders/guider.h"

namespace tessera::testing {

class TinyAttentionNet {
 public:
  static constexpr const char* kStack = "transformer_blocks";
  /// `dim` channels; tokens per sample are whatever the input has (SEG's blur wants a square count).
  explicit TinyAttentionNet(int64_t dim = 8);

  /// hidden_states [B, N, C], encoder_hidden_states [B, M, C] → [B, N, C].
  at::Tensor forward(const at::Tensor& hidden_states, const at::Tensor& encoder_hidden_states,
                     const std::vector<LayerHook>& hooks) const;

  /// A GuiderModelFn reading fields "hidden_states" and "encoder_hidden_states"; counts its calls.
  GuiderModelFn model_fn();
  int calls() const { return calls_; }
  std::vector<int64_t> call_batches() const { return call_batches_; }

 private:
  struct Weights {
    at::Tensor q, k, v, o;     // self-attention [C, C]
    at::Tensor cq, ck, cv, co; // cross-attention
    at::Tensor ff1, ff2;       // [C, 2C], [2C, C]
  };
  at::Tensor block(int64_t index, const at::Tensor& x, const at::Tensor& ehs,
                   const std::vector<LayerHook>& hooks) const;
  at::Tensor self_attention(int64_t index, const at::Tensor& n, const std::vector<LayerHook>& hooks) const;
  int64_t dim_;
  std::vector<Weights> blocks_;
  int calls_ = 0;
  std::vector<int64_t> call_batches_;
};

}  // namespace tessera::testing
