// Runtime settings: the OpenBLAS core selection (which core for which CPU, and that float32 matmul is right after
// select_blas_core on this machine).
#include <catch2/catch.hpp>

#include <ATen/ATen.h>

#include <cstdlib>
#include <string>
#include <tuple>

#include "engine/runtime.h"
#include "engine/spec.h"

using namespace tessera;

TEST_CASE("preferred_blas_core replaces only OpenBLAS's generic fallback, by what the CPU runs", "[runtime]") {
  CpuFeatures none, avx2, avx512, bf16;
  avx2.avx2_fma = true;
  avx512.avx2_fma = avx512.avx512 = true;
  bf16.avx2_fma = bf16.avx512 = bf16.avx512_bf16 = true;
  CHECK(preferred_blas_core("Prescott", bf16) == "Cooperlake");
  CHECK(preferred_blas_core("Prescott", avx512) == "SkylakeX");
  CHECK(preferred_blas_core("Prescott", avx2) == "Haswell");
  CHECK(preferred_blas_core("Prescott", none).empty());  // an old CPU: nothing better runs
  // A core OpenBLAS chose itself (it recognised the CPU) is kept.
  CHECK(preferred_blas_core("SkylakeX", bf16).empty());
  CHECK(preferred_blas_core("Haswell", bf16).empty());
  CHECK(preferred_blas_core("Zen", bf16).empty());
}

TEST_CASE("select_blas_core leaves float32 matmul correct and respects OPENBLAS_CORETYPE", "[runtime]") {
  const char* before_env = std::getenv("OPENBLAS_CORETYPE");
  const bool user_set = before_env != nullptr;
  // Reproduce OpenBLAS 0.3.21's fallback on CPUs it does not know (Sapphire Rapids): start from Prescott with no
  // OPENBLAS_CORETYPE, so select_blas_core has something to do on any machine with a dynamic-arch OpenBLAS.
  const std::string original = blas_core();
  if (!user_set && !original.empty()) {
    CHECK(set_blas_core("Prescott") == "Prescott");
    unsetenv("OPENBLAS_CORETYPE");
  }
  const BlasSelection s = select_blas_core();
  INFO(s.reason);
  if (s.library == "OpenBLAS") {
    CHECK_FALSE(s.after.empty());
    if (user_set) CHECK_FALSE(s.changed());  // the user's choice wins
    if (!user_set && !preferred_blas_core("Prescott", cpu_features()).empty()) CHECK(s.changed());
    if (s.changed()) {
      const char* env = std::getenv("OPENBLAS_CORETYPE");
      REQUIRE(env);
      CHECK(s.after == preferred_blas_core(s.before, cpu_features()));
      CHECK(std::string(env) == s.after);
    }
  } else {
    CHECK_FALSE(s.changed());
  }
  CHECK(select_blas_core().after == s.after);  // idempotent

  // Whatever was selected, sgemm (several shapes, with the GEMM blocking of large ones) is right: against a
  // product computed without BLAS for the small shapes, against dgemm for the large one.
  at::manual_seed(3);
  for (auto [m, k, n] : {std::tuple<int64_t, int64_t, int64_t>{1, 768, 320}, {77, 300, 200}, {130, 260, 150},
                         {513, 1031, 257}}) {
    at::Tensor a = at::randn({m, k}), b = at::randn({k, n});
    at::Tensor want = m * k * n < 8'000'000
                          ? (a.to(at::kDouble).unsqueeze(2) * b.to(at::kDouble).unsqueeze(0)).sum(1)  // [m, n]
                          : at::mm(a.to(at::kDouble), b.to(at::kDouble));
    CHECK(at::allclose(at::mm(a, b).to(at::kDouble), want, 1e-4, 1e-3));
    at::Tensor batched = at::bmm(a.unsqueeze(0).expand({2, m, k}).contiguous(), b.unsqueeze(0).expand({2, k, n}).contiguous());
    CHECK(at::allclose(batched[1].to(at::kDouble), want, 1e-4, 1e-3));
  }
}

TEST_CASE("dtype auto: bf16 only with AMX, fp32 otherwise; recipes and the CLI resolve it the same way", "[runtime]") {
  CpuFeatures none;
  CHECK(auto_dtype(none).dtype == "fp32");
  CpuFeatures avx512_bf16;
  avx512_bf16.avx2_fma = avx512_bf16.avx512 = avx512_bf16.avx512_bf16 = true;
  CHECK(auto_dtype(avx512_bf16).dtype == "fp32");  // measured: no faster (UNet), 3x slower (VAE) without AMX
  CHECK_THAT(auto_dtype(avx512_bf16).reason, Catch::Matchers::Contains("without AMX"));
  CpuFeatures amx = avx512_bf16;
  amx.amx_bf16 = true;
  CHECK(auto_dtype(amx).dtype == "bf16");
  // This machine: what its features say, and what a component's `dtype: auto` becomes.
  CHECK(auto_dtype().dtype == auto_dtype(cpu_features()).dtype);
  CHECK(canonical_dtype("auto") == auto_dtype().dtype);
  std::string problem;
  CHECK(canonical_dtype("fp64", &problem).empty());
  CHECK_THAT(problem, Catch::Matchers::Contains("auto"));
}
