#pragma once
/// Process-wide runtime settings for embedders and the CLI.
#include <string>

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

/// What `dtype: auto` (a component's dtype, `tessera run --dtype auto`) means on this CPU, and why: bf16 where it
/// measures faster than float32, float32 elsewhere. Measured (tools/bench/RESULTS.md, ../shared/bench/BASELINES.md):
/// with AMX oneDNN's bf16 convolutions and matmuls run several times faster than float32; with AVX512-BF16 but no
/// AMX the bf16 UNet is no faster and the bf16 VAE 3× slower; without AVX512-BF16 bf16 matmuls fall back to a
/// reference kernel (~1 GFLOP/s). So: bf16 with AMX, fp32 otherwise.
struct DtypeChoice {
  std::string dtype;   ///< "bf16" or "fp32"
  std::string reason;  ///< one line for -v
};
DtypeChoice auto_dtype(const CpuFeatures& cpu);
/// auto_dtype for this machine (computed once).
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
