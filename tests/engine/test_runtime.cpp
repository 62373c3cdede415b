// Runtime settings: the OpenBLAS core selection (which core for which CPU, and that float32 matmul is right after
// select_blas_core on this machine).
#include <catch2/catch.hpp>

#include <ATen/ATen.h>

#include <cstdlib>
#include <string>
#include <tuple>

#include "tessera/runtime.h"
#include "tessera/spec.h"

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

TEST_CASE("dtype auto: AMX bf16, no bf16 instructions fp32, AVX512-BF16 as measured", "[runtime]") {
  int probes = 0;
  auto probe_with = [&](std::vector<std::pair<double, double>> times) {
    return [&probes, times] {
      ++probes;
      Bf16Probe p;
      for (const auto& [fp32, bf16] : times) p.ops.push_back({"op", fp32, bf16});
      return p;
    };
  };
  CpuFeatures none;
  CHECK(auto_dtype(none, probe_with({{10, 1}})).dtype == "fp32");  // not measured: no bf16 instructions
  CpuFeatures avx512_bf16;
  avx512_bf16.avx2_fma = avx512_bf16.avx512 = avx512_bf16.avx512_bf16 = true;
  CpuFeatures amx = avx512_bf16;
  amx.amx_bf16 = true;
  CHECK(auto_dtype(amx, probe_with({{1, 10}})).dtype == "bf16");  // not measured: AMX
  CHECK(probes == 0);

  // AVX512-BF16 without AMX: the probe decides, and -v says the numbers.
  const DtypeChoice fast = auto_dtype(avx512_bf16, probe_with({{20, 10}, {14, 10}, {8, 4}}));
  CHECK(fast.dtype == "bf16");
  CHECK_THAT(fast.reason, Catch::Matchers::Contains("1.75x"));  // (20 + 14 + 8) / (10 + 10 + 4)
  // Xeon-like: the UNet conv no faster, the VAE conv 3x slower.
  const DtypeChoice slow = auto_dtype(avx512_bf16, probe_with({{20, 19}, {10, 30}, {8, 4}}));
  CHECK(slow.dtype == "fp32");
  CHECK_THAT(slow.reason, Catch::Matchers::Contains("without AMX") && Catch::Matchers::Contains("0.33x"));
  // Faster overall but one op slower: not chosen ("never chosen where slower").
  CHECK(auto_dtype(avx512_bf16, probe_with({{40, 10}, {10, 11}})).dtype == "fp32");
  // Faster, but by less than kBf16MinSpeedup: not worth bf16's precision.
  CHECK(auto_dtype(avx512_bf16, probe_with({{12, 10}, {12, 10}})).dtype == "fp32");
  CHECK(probes == 4);

  // This machine: the decision its features and (where it measures) the probe make, and what `auto` becomes.
  CHECK((auto_dtype().dtype == "bf16" || auto_dtype().dtype == "fp32"));
  if (!cpu_features().avx512_bf16) CHECK(auto_dtype().dtype == "fp32");
  if (cpu_features().amx_bf16) CHECK(auto_dtype().dtype == "bf16");
  if (cpu_features().avx512_bf16 && !cpu_features().amx_bf16)  // the real probe ran: three ops, both dtypes timed
    CHECK_THAT(auto_dtype().reason, Catch::Matchers::Contains("measured") && Catch::Matchers::Contains("VAE conv"));
  CHECK(canonical_dtype("auto") == auto_dtype().dtype);
  std::string problem;
  CHECK(canonical_dtype("fp64", &problem).empty());
  CHECK_THAT(problem, Catch::Matchers::Contains("auto"));
}
