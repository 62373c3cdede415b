#include "models/common/flash_attention.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#if TESSERA_HAS_DNNL
#include <oneapi/dnnl/dnnl.h>
#endif

#include "tessera/error.h"

namespace tessera {

namespace {

std::atomic<int64_t> g_q_rows{0};
std::atomic<int64_t> g_k_rows{0};

struct Tiles {
  int64_t q = 0;
  int64_t k = 0;
};

// One task holds a [q, k] score tile plus a [k, D] key and a [k, Dv] value tile: ~192 KB of keys and values leaves
// room for the scores and the output rows in a 512 KB L2. 64 query rows keep every core busy on a 77-token text
// encoder and give ~1000 tasks on a 4096-token UNet self-attention.
Tiles pick_tiles(int64_t d, int64_t dv) {
  Tiles t{g_q_rows.load(), g_k_rows.load()};
  if (t.q <= 0) t.q = 64;
  if (t.k <= 0) t.k = std::clamp<int64_t>((196608 / (4 * (d + dv))) / 64 * 64, 64, 1024);
  return t;
}

#if TESSERA_HAS_DNNL
void sgemm(char ta, char tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
           const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  const dnnl_status_t status = dnnl_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  if (status != dnnl_success)
    throw ExecutionError("flash attention: oneDNN sgemm failed (status " + std::to_string(static_cast<int>(status)) +
                         ") for a " + std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k) +
                         " tile");
}
#endif

// A float32 view whose last dim is contiguous and whose row stride is a valid leading dimension.
at::Tensor as_rows(const at::Tensor& t) {
  at::Tensor f = t.scalar_type() == at::kFloat ? t : t.to(at::kFloat);
  if (f.stride(-1) != 1 || f.stride(-2) < f.size(-1)) f = f.contiguous();
  return f;
}

}  // namespace

bool flash_attention_available() { return TESSERA_HAS_DNNL != 0; }

bool flash_attention_supports(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                              const at::Tensor& mask) {
  if (!flash_attention_available()) return false;
  for (const at::Tensor* t : {&query, &key, &value}) {
    if (!t->device().is_cpu()) return false;
    const auto st = t->scalar_type();
    if (st != at::kFloat && st != at::kBFloat16 && st != at::kHalf) return false;
    if (at::GradMode::is_enabled() && t->requires_grad()) return false;
  }
  if (mask.defined() && (!mask.device().is_cpu() || mask.dim() > 4 ||
                         (at::GradMode::is_enabled() && mask.requires_grad())))
    return false;
  return true;
}

void set_flash_attention_tiles(int64_t q_rows, int64_t k_rows) {
  g_q_rows.store(std::max<int64_t>(0, q_rows));
  g_k_rows.store(std::max<int64_t>(0, k_rows));
}

at::Tensor flash_attention(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                           const at::Tensor& mask, double scale) {
#if TESSERA_HAS_DNNL
  // One operator in profiles and FLOP counts (tools/bench/flop_counter.h reads the three inputs).
  RECORD_FUNCTION("tessera::flash_attention", std::vector<c10::IValue>({query, key, value}));
  const int64_t B = query.size(0), H = query.size(1), Lq = query.size(2), D = query.size(3);
  const int64_t Lk = key.size(2), Dv = value.size(3);
  if (key.size(0) != B || value.size(0) != B || key.size(1) != H || value.size(1) != H)
    throw ExecutionError("flash attention: query/key/value batch or head counts differ");
  const at::Tensor q = as_rows(query), k = as_rows(key), v = as_rows(value);
  // The mask as an additive float32 [B, h, Lq, Lk] view (broadcast dims get stride 0; nothing is materialised
  // beyond the mask's own size).
  at::Tensor m4;
  if (mask.defined()) {
    at::Tensor additive = mask.scalar_type() == at::kBool
                              ? at::zeros(mask.sizes(), mask.options().dtype(at::kFloat))
                                    .masked_fill_(mask.logical_not(), -std::numeric_limits<float>::infinity())
                              : mask.to(at::kFloat);
    m4 = additive.expand({B, H, Lq, Lk});
  }
  at::Tensor out = at::empty({B, H, Lq, Dv}, q.options());  // float32, contiguous
  const Tiles tiles = pick_tiles(D, Dv);
  const int64_t q_tiles = (Lq + tiles.q - 1) / tiles.q;
  const float* qp = q.data_ptr<float>();
  const float* kp = k.data_ptr<float>();
  const float* vp = v.data_ptr<float>();
  const float* mp = m4.defined() ? m4.data_ptr<float>() : nullptr;
  float* op = out.data_ptr<float>();
  const float fscale = static_cast<float>(scale);
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();

  at::parallel_for(0, B * H * q_tiles, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(static_cast<size_t>(tiles.q * tiles.k));
    std::vector<float> acc(static_cast<size_t>(tiles.q * Dv));
    std::vector<float> row_max(static_cast<size_t>(tiles.q)), row_sum(static_cast<size_t>(tiles.q));
    for (int64_t task = begin; task < end; ++task) {
      const int64_t bh = task / q_tiles, b = bh / H, h = bh % H;
      const int64_t q0 = (task % q_tiles) * tiles.q, qn = std::min(tiles.q, Lq - q0);
      const float* qt = qp + b * q.stride(0) + h * q.stride(1) + q0 * q.stride(2);
      std::fill(row_max.begin(), row_max.begin() + qn, kNegInf);
      std::fill(row_sum.begin(), row_sum.begin() + qn, 0.0f);
      std::fill(acc.begin(), acc.begin() + qn * Dv, 0.0f);
      for (int64_t k0 = 0; k0 < Lk; k0 += tiles.k) {
        const int64_t kn = std::min(tiles.k, Lk - k0);
        const float* kt = kp + b * k.stride(0) + h * k.stride(1) + k0 * k.stride(2);
        const float* vt = vp + b * v.stride(0) + h * v.stride(1) + k0 * v.stride(2);
        float* s = scores.data();  // [qn, kn], row stride kn
        // s = scale * Q_tile K_tile^T
        sgemm('N', 'T', qn, kn, D, fscale, qt, q.stride(2), kt, k.stride(2), 0.0f, s, kn);
        if (mp) {
          const float* mt = mp + b * m4.stride(0) + h * m4.stride(1) + q0 * m4.stride(2) + k0 * m4.stride(3);
          for (int64_t i = 0; i < qn; ++i)
            for (int64_t j = 0; j < kn; ++j) s[i * kn + j] += mt[i * m4.stride(2) + j * m4.stride(3)];
        }
        // Online softmax: new running max per row, scores shifted by it (0 while a row has seen only -inf, so
        // fully masked tiles contribute exp(-inf) = 0), the old sum and output rescaled by exp(old - new).
        for (int64_t i = 0; i < qn; ++i) {
          float* row = s + i * kn;
          float mx = kNegInf;
#pragma omp simd reduction(max : mx)
          for (int64_t j = 0; j < kn; ++j) mx = std::max(mx, row[j]);
          const float m_new = std::max(row_max[i], mx);
          const float shift = m_new == kNegInf ? 0.0f : m_new;
#pragma omp simd
          for (int64_t j = 0; j < kn; ++j) row[j] -= shift;
          const float c = std::exp(row_max[i] - shift);  // 0 when the row had seen only -inf
          row_max[i] = m_new;
          row_sum[i] *= c;
          float* o = acc.data() + i * Dv;
          for (int64_t j = 0; j < Dv; ++j) o[j] *= c;
        }
        at::Tensor tile = at::from_blob(s, {qn * kn}, at::TensorOptions().dtype(at::kFloat));
        tile.exp_();  // ATen's vectorised exp
        for (int64_t i = 0; i < qn; ++i) {
          const float* row = s + i * kn;
          float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
          for (int64_t j = 0; j < kn; ++j) sum += row[j];
          row_sum[i] += sum;
        }
        // acc += P_tile V_tile
        sgemm('N', 'N', qn, Dv, kn, 1.0f, s, kn, vt, v.stride(2), 1.0f, acc.data(), Dv);
      }
      float* ot = op + ((b * H + h) * Lq + q0) * Dv;
      for (int64_t i = 0; i < qn; ++i) {
        // A zero sum means every key was masked out: NaN, as the math backend's softmax gives.
        const float inv = row_sum[i] == 0.0f ? std::numeric_limits<float>::quiet_NaN() : 1.0f / row_sum[i];
        for (int64_t j = 0; j < Dv; ++j) ot[i * Dv + j] = acc[i * Dv + j] * inv;
      }
    }
  });
  return query.scalar_type() == at::kFloat ? out : out.to(query.scalar_type());
#else
  (void)query, (void)key, (void)value, (void)mask, (void)scale;
  throw ExecutionError("flash attention: this build has no oneDNN sgemm (libdnnl-dev was not found at configure time)");
#endif
}

}  // namespace tessera
