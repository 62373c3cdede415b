#pragma once
/// Process-wide runtime settings for embedders and the CLI.
#include <functional>
#include <string>
#include <vector>

namespace tessera {

/// Sets LibTorch's intra-op threads: `n` > 0 as given, otherwise the number of cores (LibTorch
/// would otherwise start with fewer on some builds). Returns the number now in use.
int configure_threads(int n = 0);

/// CPU features that decide which OpenBLAS kernels can run.
struct CpuFeatures {
  bool avx2_fma = false;    ///< AVX2 and FMA3 (OpenBLAS "Haswell" kernels)
  bool avx512 = false;      ///< AVX-512 F, BW, DQ and VL enabled by the OS ("SkylakeX")
  bool avx512_bf16 = false; ///< AVX512-BF16 as well ("Cooperlake")
  bool amx_bf16 = false;    ///< AMX tiles with bf16 (Sapphire Rapids and later): oneDNN's fast bf16 path
};
/// This machine's features (cpuid and the OS-enabled register state, via the compiler's cpu model).
CpuFeatures cpu_features();

/// One bf16-versus-float32 timing, in this process, of the operations the models spend their time in.
struct Bf16Probe {
  struct Op {
    std::string name;
    double fp32_ms = 0;  ///< best of the timed repeats
    double bf16_ms = 0;
    double speedup() const { return bf16_ms > 0 ? fp32_ms / bf16_ms : 0; }
  };
  std::vector<Op> ops;
  /// Σ fp32 / Σ bf16: the whole probe's speed-up.
  double speedup() const;
};
/// Times a UNet-like 3×3 convolution (320 channels at 32², batch 2), a VAE-like one (128 channels at 96²) and a
/// linear layer (2048 tokens, 320 → 1280) in float32 and in bf16 with LibTorch's kernels (oneDNN), interleaved, on
/// the threads LibTorch uses now: about 0.3 s on a CPU with bf16 instructions.
Bf16Probe probe_bf16_speed();

/// bf16 must be at least this much faster than float32 over the probe to be chosen (and no probed op slower).
inline constexpr double kBf16MinSpeedup = 1.3;

/// What `dtype: auto` (a component's dtype, `tessera run --dtype auto`) means on this CPU, and why: bf16 where it
/// measures faster than float32, float32 elsewhere.
/// - no AVX512-BF16: float32 without measuring (bf16 matmuls would run a reference kernel, ~1 GFLOP/s);
/// - AMX-BF16: bf16 without measuring (oneDNN's AMX kernels run bf16 several times faster);
/// - AVX512-BF16 without AMX: `probe()` decides. It differs by CPU: an AVX512-BF16 Xeon ran the bf16 UNet no faster
///   and the bf16 VAE 3× slower, a Zen 5 EPYC runs the UNet 1.5–2.2× and the VAE 1.4× faster
///   (tools/bench/RESULTS.md). bf16 when the probe's speed-up ≥ kBf16MinSpeedup and no op is slower.
struct DtypeChoice {
  std::string dtype;   ///< "bf16" or "fp32"
  std::string reason;  ///< one line for -v
};
DtypeChoice auto_dtype(const CpuFeatures& cpu, const std::function<Bf16Probe()>& probe = probe_bf16_speed);
/// auto_dtype for this machine (decided once per process, on first use; thread-safe).
const DtypeChoice& auto_dtype();

/// The OpenBLAS core type Tessera selects when OpenBLAS runs `current` (its corename) on a CPU with `cpu`, or ""
/// to leave it: only OpenBLAS's generic fallback cores (Prescott, which 0.3.21 uses for CPUs it does not know, e.g.
/// Sapphire Rapids) are replaced, by the best one the CPU runs: Cooperlake (AVX512-BF16), SkylakeX (AVX-512),
/// Haswell (AVX2+FMA); "" on a CPU without AVX2 (nothing better to pick).
std::string preferred_blas_core(const std::string& current, const CpuFeatures& cpu);

/// OpenBLAS's current core ("Prescott", "Cooperlake", …), "" when LibTorch's BLAS is not a dynamic-arch OpenBLAS.
std::string blas_core();
/// Has OpenBLAS select `core` now: sets OPENBLAS_CORETYPE=`core` and runs OpenBLAS's gotoblas_dynamic_quit and
/// gotoblas_dynamic_init (what its load-time constructor runs). Returns the core it runs afterwards ("" when not
/// OpenBLAS). No BLAS call may run concurrently. Used by select_blas_core; also lets tests and benchmarks
/// reproduce OpenBLAS's Prescott fallback on CPUs it does recognise.
std::string set_blas_core(const std::string& core);

/// What select_blas_core did.
struct BlasSelection {
  std::string library;  ///< "OpenBLAS" or "" when LibTorch's BLAS is not a dynamic-arch OpenBLAS (nothing done)
  std::string before;   ///< OpenBLAS's core when called (e.g. "Prescott")
  std::string after;    ///< its core on return (e.g. "Cooperlake")
  std::string reason;   ///< one line for logs: why it changed or not
  bool changed() const { return before != after; }
};

/// Gives float32 matmul (LibTorch's mm/addmm/bmm → BLAS) the CPU's full speed. Debian's OpenBLAS 0.3.21 does not
/// recognise recent CPU classes and falls back to its SSE3 "Prescott" kernels, ~6x below its AVX-512 ones. When
/// OpenBLAS (dynamic-arch build) runs such a fallback core and OPENBLAS_CORETYPE is not set, this sets
/// OPENBLAS_CORETYPE to preferred_blas_core (so child processes inherit it) and has OpenBLAS select its core again
/// through its own gotoblas_dynamic_quit/gotoblas_dynamic_init (the code its load-time constructor runs), then
/// checks a small sgemm against a reference and restores the previous core if it disagrees.
/// Does nothing when OPENBLAS_CORETYPE is already set (the user's choice wins, e.g. OPENBLAS_CORETYPE=Prescott to
/// opt out), when TESSERA_BLAS_CORE=keep, on CPUs without AVX2, or when the BLAS is not OpenBLAS.
/// Call once, early in main(), before other threads use BLAS (the CLI and benchmarks do). Idempotent.
BlasSelection select_blas_core();

}  // namespace tessera
