// tessera_bench_blas: the matmul ceilings Tessera's models run on: float32 sgemm through LibTorch's BLAS (after
// select_blas_core, as the CLI does) and bfloat16 matmul (oneDNN), n×n, GFLOP/s of the median run.
// OPENBLAS_CORETYPE=Prescott reproduces Debian OpenBLAS 0.3.21's own choice on CPUs it does not know (and keeps
// it: a user's OPENBLAS_CORETYPE wins); --simulate-fallback switches OpenBLAS to Prescott at start-up, as that
// fallback does, then lets select_blas_core repair it at run time (the path taken on such CPUs).
//
//   tessera_bench_blas [--n 2048] [--runs N] [--threads T] [--simulate-fallback]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "tessera/runtime.h"

using namespace tessera;

namespace {

double median_gflops(const at::Tensor& a, const at::Tensor& b, int runs) {
  at::mm(a, b);  // warm-up
  std::vector<double> s;
  for (int r = 0; r < runs; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    at::Tensor c = at::mm(a, b);
    s.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(s.begin(), s.end());
  const double n = static_cast<double>(a.size(0));
  return 2.0 * n * n * n / s[s.size() / 2] / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t n = 2048;
  int runs = 5, threads = 0;
  bool simulate_fallback = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--n" && i + 1 < argc) n = std::atoll(argv[++i]);
    else if (a == "--runs" && i + 1 < argc) runs = std::max(1, std::atoi(argv[++i]));
    else if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (a == "--simulate-fallback") simulate_fallback = true;
    else {
      std::fprintf(stderr, "usage: %s [--n 2048] [--runs N] [--threads T] [--simulate-fallback]\n", argv[0]);
      return 2;
    }
  }
  if (simulate_fallback && !std::getenv("OPENBLAS_CORETYPE")) {
    set_blas_core("Prescott");
    unsetenv("OPENBLAS_CORETYPE");
  }
  const BlasSelection blas = select_blas_core();
  if (threads > 0) at::set_num_threads(threads);
  c10::InferenceMode guard;
  torch::manual_seed(0);
  const at::Tensor a = at::randn({n, n}), b = at::randn({n, n});
  std::printf("%lldx%lld matmul, %d threads, BLAS core %s\n", static_cast<long long>(n), static_cast<long long>(n),
              at::get_num_threads(), blas.after.empty() ? "?" : blas.after.c_str());
  std::printf("sgemm fp32: %.1f GFLOP/s\n", median_gflops(a, b, runs));
  std::printf("matmul bf16: %.1f GFLOP/s\n", median_gflops(a.to(at::kBFloat16), b.to(at::kBFloat16), runs));
  std::printf("BLAS: %s\n", blas.reason.c_str());
  return 0;
}
