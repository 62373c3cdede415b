#include "models/common/attention_dispatch.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <cmath>
#include <limits>
#include <mutex>

#if __has_include(<ATen/ops/scaled_dot_product_attention.h>)
#define TESSERA_HAS_SDPA 2  // public at::scaled_dot_product_attention (LibTorch >= 2.0)
#elif __has_include(<ATen/ops/_scaled_dot_product_attention.h>)
#define TESSERA_HAS_SDPA 1  // LibTorch 1.13's private at::_scaled_dot_product_attention (returns a tuple)
#else
#define TESSERA_HAS_SDPA 0
#endif

#include "tessera/error.h"
#include "models/common/flash_attention.h"

namespace tessera {

namespace {

std::atomic<AttentionBackend> g_default{AttentionBackend::Auto};
std::atomic<int64_t> g_chunk_rows{1024};

// The mask as an additive float mask in `dtype` (bool: false → -inf), or undefined.
at::Tensor additive_mask(const at::Tensor& mask, at::ScalarType dtype) {
  if (!mask.defined()) return {};
  if (mask.scalar_type() == at::kBool)
    return at::zeros(mask.sizes(), mask.options().dtype(dtype))
        .masked_fill_(mask.logical_not(), -std::numeric_limits<double>::infinity());
  return mask.to(dtype);
}

void check_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4)
    throw ExecutionError("dispatch_attention expects 4-D [B, heads, L, D] query/key/value, got " +
                         std::to_string(q.dim()) + "/" + std::to_string(k.dim()) + "/" + std::to_string(v.dim()) +
                         " dims");
  if (q.size(-1) != k.size(-1) || k.size(-2) != v.size(-2))
    throw ExecutionError("dispatch_attention: query/key head dims or key/value lengths differ");
}

at::Tensor math_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                          double scale) {
  // Q K^T in the inputs' dtype (bfloat16 runs on oneDNN's bf16 GEMM, accumulating in float32; callers that want
  // float32 scores, e.g. upcast_attention, pass float32 q/k), then scale, mask and softmax in float32 (diffusers'
  // upcast_softmax), probabilities back in the value's dtype.
  at::Tensor scores = at::matmul(q, k.to(q.scalar_type()).transpose(-2, -1)).to(at::kFloat) * scale;  // [B, h, Lq, Lk]
  if (mask.defined()) scores = scores + additive_mask(mask, at::kFloat);
  at::Tensor probs = at::softmax(scores, -1).to(v.scalar_type());
  return at::matmul(probs, v).to(q.scalar_type());  // [B, h, Lq, Dv]
}

at::Tensor chunked_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                             double scale) {
  const int64_t rows = std::max<int64_t>(1, g_chunk_rows.load());
  const int64_t lq = q.size(2);
  if (lq <= rows) return math_attention(q, k, v, mask, scale);
  // A mask broadcast over query rows (size 1 there) applies to every chunk as is.
  const bool mask_per_row = mask.defined() && mask.dim() >= 2 && mask.size(-2) == lq && lq != 1;
  at::Tensor out = at::empty({q.size(0), q.size(1), lq, v.size(-1)}, q.options());
  for (int64_t start = 0; start < lq; start += rows) {
    int64_t len = std::min(rows, lq - start);
    at::Tensor m = mask_per_row ? mask.narrow(-2, start, len) : mask;
    out.narrow(2, start, len).copy_(math_attention(q.narrow(2, start, len), k, v, m, scale));
  }
  return out;
}

at::Tensor sdpa_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                          double scale) {
#if TESSERA_HAS_SDPA
#if TESSERA_HAS_SDPA == 1
  // 1.13's CPU kernel is the math composite with the softmax in the inputs' dtype: keep it float32 for reduced ones.
  if (q.scalar_type() != at::kFloat && q.scalar_type() != at::kDouble) return math_attention(q, k, v, mask, scale);
#endif
  // The kernels use 1/sqrt(D); another scale is folded into the query.
  const double default_scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  at::Tensor query = std::abs(scale - default_scale) > 1e-12 * default_scale ? q * (scale / default_scale) : q;
  c10::optional<at::Tensor> m;
  if (mask.defined())  // [B, h, Lq, Lk] materialised: the 1.13 kernel does not broadcast masks
    m = additive_mask(mask, q.scalar_type()).expand({q.size(0), q.size(1), q.size(2), k.size(2)}).contiguous();
#if TESSERA_HAS_SDPA == 2
  return at::scaled_dot_product_attention(query, k, v, m, 0.0, false);
#else
  return std::get<0>(at::_scaled_dot_product_attention(query, k, v, m, 0.0, false, false));
#endif
#else
  static std::once_flag logged;
  std::call_once(logged, [] { spdlog::info("attention: this LibTorch has no fused SDPA; the sdpa backend computes math"); });
  return math_attention(q, k, v, mask, scale);
#endif
}

}  // namespace

const char* attention_backend_name(AttentionBackend backend) {
  switch (backend) {
    case AttentionBackend::Auto: return "auto";
    case AttentionBackend::Math: return "math";
    case AttentionBackend::Sdpa: return "sdpa";
    case AttentionBackend::Chunked: return "chunked";
    case AttentionBackend::Flash: return "flash";
  }
  return "?";
}

std::optional<AttentionBackend> attention_backend_from_name(const std::string& name) {
  for (auto b : {AttentionBackend::Auto, AttentionBackend::Math, AttentionBackend::Sdpa, AttentionBackend::Chunked,
                 AttentionBackend::Flash})
    if (name == attention_backend_name(b)) return b;
  return std::nullopt;
}

void set_default_attention_backend(AttentionBackend backend) { g_default.store(backend); }
AttentionBackend default_attention_backend() { return g_default.load(); }
void set_attention_chunk_size(int64_t rows) { g_chunk_rows.store(std::max<int64_t>(1, rows)); }
int64_t attention_chunk_size() { return g_chunk_rows.load(); }
bool sdpa_available() { return TESSERA_HAS_SDPA != 0; }

AttentionBackend resolve_attention_backend(AttentionBackend backend, const at::Tensor& query, const at::Tensor& key,
                                           const at::Tensor& value, const at::Tensor& mask) {
  if (backend == AttentionBackend::Auto) backend = default_attention_backend();
  if (backend == AttentionBackend::Auto) {
    // Per call: the blocked kernel wherever it runs (it is faster than math from a few hundred tokens on and
    // never slower by more than its call overhead below that: tools/bench/RESULTS.md), LibTorch 2's fused kernels
    // on CUDA, math otherwise.
    if (flash_attention_supports(query, key, value, mask)) return AttentionBackend::Flash;
    if (query.device().is_cuda() && TESSERA_HAS_SDPA == 2) return AttentionBackend::Sdpa;
    return AttentionBackend::Math;
  }
  if (backend == AttentionBackend::Flash && !flash_attention_supports(query, key, value, mask))
    return AttentionBackend::Math;
  return backend;
}

at::Tensor dispatch_attention(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                              const at::Tensor& mask, std::optional<double> scale, AttentionBackend backend) {
  check_inputs(query, key, value);
  const double s = scale.value_or(1.0 / std::sqrt(static_cast<double>(query.size(-1))));
  switch (resolve_attention_backend(backend, query, key, value, mask)) {
    case AttentionBackend::Flash: return flash_attention(query, key, value, mask, s);
    case AttentionBackend::Sdpa: return sdpa_attention(query, key, value, mask, s);
    case AttentionBackend::Chunked: return chunked_attention(query, key, value, mask, s);
    default: return math_attention(query, key, value, mask, s);
  }
}

}  // namespace tessera
