#pragma once
/// Blocked ("flash") attention on the CPU: softmax(Q K^T * scale + mask) V computed tile by tile with an online
/// softmax, so the [Lq, Lk] score matrix is never materialised — each worker holds one [q_rows, k_rows] tile of
/// scores that stays in its cache. The Flash backend of dispatch_attention (models/common/attention_dispatch.h).
///
///   at::Tensor out = flash_attention(q, k, v, mask, 0.125);   // [B, heads, Lq, Dv]
///
/// Why a hand-written kernel: LibTorch 1.13's CPU attention (`_scaled_dot_product_attention`) is the math
/// composite, and oneDNN 2.6 (Debian's) has no fused attention primitive; both materialise the scores. The two
/// products of every tile go to oneDNN's sgemm and the exponentials to ATen's vectorised exp; only the running
/// max / sum / rescale bookkeeping of the online softmax is written here.
#include <ATen/ATen.h>

#include <cstdint>

namespace tessera {

/// Whether this build has the kernel (it needs oneDNN's sgemm, found at configure time).
bool flash_attention_available();

/// Whether flash_attention computes these inputs: CPU tensors of float32, bfloat16 or float16 (reduced types are
/// widened to float32 per tile; the result comes back in the query's dtype), a floating or bool mask, and no
/// autograd (the kernel has no backward: inputs that require grad in grad mode go to the math backend).
bool flash_attention_supports(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                              const at::Tensor& mask);

/// Tile sizes: query rows per task and key rows per inner step. 0 (the default) picks them from the head dim so
/// that one tile of keys, values and scores fits a core's L2 cache. Tests set small tiles to exercise ragged
/// edges. Thread-safe.
void set_flash_attention_tiles(int64_t q_rows, int64_t k_rows);

/// query [B, h, Lq, D], key [B, h, Lk, D], value [B, h, Lk, Dv] (any strides; the last dim is made contiguous if
/// it is not), mask broadcastable to [B, h, Lq, Lk] (bool: true keeps; floating: added) or undefined.
/// A row whose every key is masked out gives NaN, as the math backend does. Requires flash_attention_supports.
at::Tensor flash_attention(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                           const at::Tensor& mask, double scale);

}  // namespace tessera
