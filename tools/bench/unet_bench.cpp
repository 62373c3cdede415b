// tessera_bench_unet: one full-size SD1.5 UNet2DConditionModel forward on CPU (random weights, config embedded
// below), batch 2, 32×32 latent (256 px; --size 64 for 512 px). Reports ms per forward (median), GFLOP/s over the
// counted FLOPs and peak RSS. Reference: ../shared/bench/BASELINES.md (diffusers 5.7 s at 32×32, 2 threads).
//
// --dtype bf16 converts the weights to bfloat16 (the `dtype: bf16` compute path: activations bf16, norms and
// softmax float32); inputs are float32 either way and the output is float32.
//
// --attention NAME picks dispatch_attention's backend (default: the per-call choice, as the CLI); --profile adds one
// forward timed per ATen operator (engine/op_profile.h) and prints where the time went.
//
//   tessera_bench_unet [--size 32|64] [--runs N] [--threads T] [--dtype fp32|bf16] [--attention NAME] [--profile]

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "tools/bench/bench_util.h"
#include "tools/bench/flop_counter.h"
#include "engine/op_profile.h"
#include "tools/bench/sd15_configs.h"
#include "tessera/runtime.h"
#include "models/common/attention_dispatch.h"
#include "models/unet/unet_2d_condition.h"

using namespace tessera;
using namespace tessera::bench;

int main(int argc, char** argv) {
  int64_t size = 32;
  int runs = 3;
  int threads = 0;
  std::string dtype_name = "fp32";
  std::string attention = "auto";
  bool profile = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--dtype" && i + 1 < argc && (std::strcmp(argv[i + 1], "fp32") == 0 || std::strcmp(argv[i + 1], "bf16") == 0))
      dtype_name = argv[++i];
    else if (a == "--size" && i + 1 < argc) size = std::atoll(argv[++i]);
    else if (a == "--runs" && i + 1 < argc) runs = std::atoi(argv[++i]);
    else if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (a == "--attention" && i + 1 < argc && attention_backend_from_name(argv[i + 1])) attention = argv[++i];
    else if (a == "--profile") profile = true;
    else {
      std::fprintf(stderr,
                   "usage: %s [--size 32|64] [--runs N] [--threads T] [--dtype fp32|bf16] "
                   "[--attention auto|flash|math|chunked|sdpa] [--profile]\n",
                   argv[0]);
      return 2;
    }
  }
  const BlasSelection blas = select_blas_core();  // as the CLI does; OPENBLAS_CORETYPE=Prescott to compare
  if (threads > 0) at::set_num_threads(threads);
  set_default_attention_backend(*attention_backend_from_name(attention));
  c10::InferenceMode guard;
  torch::manual_seed(0);
  auto t0 = std::chrono::steady_clock::now();
  UNet2DConditionModel unet(UNet2DConditionModelConfig::from_json(nlohmann::json::parse(kSd15UNetConfig), "SD1.5 UNet"));
  const at::ScalarType dtype = dtype_name == "bf16" ? at::kBFloat16 : at::kFloat;
  if (dtype != at::kFloat) unet->to(dtype);
  unet->eval();
  const double build_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const at::Tensor sample = at::randn({2, 4, size, size});
  const at::Tensor ehs = at::randn({2, 77, 768});
  const at::Tensor t = at::scalar_tensor(500, at::kLong);

  // Warm-up run, with the FLOP counter attached.
  double gflop = 0.0;
  {
    FlopCounter count;
    unet->forward(sample, t, ehs);
    gflop = count.flops() / 1e9;
  }

  std::vector<double> ms;
  for (int r = 0; r < runs; ++r) {
    auto s = std::chrono::steady_clock::now();
    at::Tensor out = unet->forward(sample, t, ehs);
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - s).count());
  }
  std::sort(ms.begin(), ms.end());
  const double median = median_sorted(ms);
  int64_t params = 0;
  for (const auto& p : unet->parameters()) params += p.numel();
  std::printf("SD1.5 UNet2DConditionModel, batch 2, %lldx%lld latent, %s, %d threads, %.0f M params (built in %.1f s)\n",
              static_cast<long long>(size), static_cast<long long>(size), dtype_name.c_str(), at::get_num_threads(),
              static_cast<double>(params) / 1e6, build_s);
  std::printf("forward: median %.1f ms (min %.1f, max %.1f, %d runs)\n", median, ms.front(), ms.back(), runs);
  std::printf("compute: %.1f GFLOP per forward, %.1f GFLOP/s\n", gflop, gflop / (median / 1000.0));
  std::printf("peak RSS: %.0f MB\n", peak_rss_mb());
  std::printf("attention: %s\n", attention.c_str());
  std::printf("BLAS: %s\n", blas.reason.c_str());
  if (profile) {
    OpProfile ops;
    unet->forward(sample, t, ehs);
    std::fputs(ops.report(16).c_str(), stdout);
  }
  return 0;
}
