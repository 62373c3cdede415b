#pragma once
/// dispatch_attention: the one place where attention is computed, for every model's attention processor, so
/// backends can be chosen globally or per call.
///
///   at::Tensor out = dispatch_attention(q, k, v);                      // [B, heads, Lq, D], global backend
///   at::Tensor o2 = dispatch_attention(q, k, v, mask, 0.125, AttentionBackend::Chunked);
#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <string>

namespace tessera {

/// How attention is computed. All give the same result up to float rounding.
enum class AttentionBackend {
  Auto,     ///< the process-wide default (set_default_attention_backend); when that is Auto too, chosen per call:
            ///< Flash for CPU inputs it supports, Sdpa on CUDA with LibTorch >= 2.0, Math otherwise
  Math,     ///< softmax(Q K^T * scale + mask) V; Q K^T in the inputs' dtype, scale/mask/softmax in float32 (diffusers' upcast_softmax)
  Sdpa,     ///< LibTorch's fused scaled-dot-product attention (falls back to Math, logged once, when absent)
  Chunked,  ///< Math over chunks of query rows: memory O(chunk * Lk) instead of O(Lq * Lk)
  Flash,    ///< blocked online-softmax CPU kernel (models/common/flash_attention.h): no [Lq, Lk] matrix at all, in
            ///< float32 per tile (reduced types widened); falls back to Math where it does not apply (CUDA tensors,
            ///< autograd, a build without oneDNN)
};

/// "auto", "math", "sdpa", "chunked", "flash".
const char* attention_backend_name(AttentionBackend backend);
/// Parses a backend name; std::nullopt when unknown.
std::optional<AttentionBackend> attention_backend_from_name(const std::string& name);

/// The process-wide backend used for AttentionBackend::Auto: Auto (the per-call choice above) unless set.
/// Thread-safe.
void set_default_attention_backend(AttentionBackend backend);
AttentionBackend default_attention_backend();
/// Query rows per chunk of the Chunked backend (default 1024; values < 1 are clamped to 1). Thread-safe.
void set_attention_chunk_size(int64_t rows);
int64_t attention_chunk_size();

/// Whether this LibTorch build has a fused SDPA kernel (else Sdpa computes Math).
bool sdpa_available();

/// The backend a call with these inputs runs when asked for `backend` (Auto resolved through the default and the
/// per-call rule; Flash/Sdpa where they cannot run → Math). For logs and tests.
AttentionBackend resolve_attention_backend(AttentionBackend backend, const at::Tensor& query, const at::Tensor& key,
                                           const at::Tensor& value, const at::Tensor& mask = {});

/// Scaled dot-product attention of query [B, heads, Lq, D], key [B, heads, Lk, D], value [B, heads, Lk, Dv]
/// → [B, heads, Lq, Dv] in the query's dtype. `mask` (undefined = none) broadcasts to [B, heads, Lq, Lk]: a bool
/// mask keeps the positions that are true, a floating mask is added to the scores (0 / -inf or -10000 as in
/// diffusers). `scale` defaults to 1/sqrt(D). A query row whose every key is masked out gives NaN, as in PyTorch.
at::Tensor dispatch_attention(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                              const at::Tensor& mask = {}, std::optional<double> scale = std::nullopt,
                              AttentionBackend backend = AttentionBackend::Auto);

}  // namespace tessera
