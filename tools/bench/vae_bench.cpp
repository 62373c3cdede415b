// tessera_bench_vae: the full-size SD1.5 AutoencoderKL decode on CPU (random weights, config embedded
// below) of a [1, 4, 64, 64] latent into a 512×512 image. Reports ms per decode (median) and peak RSS.
// Reference: ../shared/bench/BASELINES.md (diffusers 18.8 s, peak RSS 1.64 GB, 2 threads).
//
// --dtype bf16 runs the bfloat16 compute path (weights and activations bf16, group norms float32).
//
// --attention NAME picks dispatch_attention's backend for the mid-block attention (default: the per-call choice, as
// the CLI); --profile adds one decode timed per ATen operator (engine/op_profile.h).
//
//   tessera_bench_vae [--latent 64] [--runs N] [--threads T] [--dtype fp32|bf16] [--attention NAME] [--profile]

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "tools/bench/bench_util.h"
#include "engine/op_profile.h"
#include "tools/bench/sd15_configs.h"
#include "tessera/runtime.h"
#include "models/common/attention_dispatch.h"
#include "models/loading/config_reader.h"
#include "models/vae/autoencoder_kl.h"

using namespace tessera;
using namespace tessera::bench;

namespace {

}  // namespace

int main(int argc, char** argv) {
  int64_t latent = 64;
  int runs = 1;
  int threads = 0;
  std::string dtype_name = "fp32";
  std::string attention = "auto";
  bool profile = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--dtype" && i + 1 < argc && (std::strcmp(argv[i + 1], "fp32") == 0 || std::strcmp(argv[i + 1], "bf16") == 0))
      dtype_name = argv[++i];
    else if (a == "--latent" && i + 1 < argc) latent = std::atoll(argv[++i]);
    else if (a == "--runs" && i + 1 < argc) runs = std::atoi(argv[++i]);
    else if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (a == "--attention" && i + 1 < argc && attention_backend_from_name(argv[i + 1])) attention = argv[++i];
    else if (a == "--profile") profile = true;
    else {
      std::fprintf(stderr,
                   "usage: %s [--latent 64] [--runs N] [--threads T] [--dtype fp32|bf16] "
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
  ModelConfig cfg(nlohmann::json::parse(kSd15VaeConfig), "SD1.5 VAE config");
  AutoencoderKLImpl vae(AutoencoderKLConfig::from_config(cfg));
  // As create_diffusers_model: force_upcast would keep a float16 request in float32; bf16 is not upcast.
  const at::ScalarType dtype =
      model_compute_dtype(vae.config, dtype_name == "bf16" ? at::kBFloat16 : at::kFloat);
  if (dtype != at::kFloat) vae.to(dtype);
  vae.eval();
  const at::Tensor z = at::randn({1, 4, latent, latent});
  vae.decode(z);  // warm-up, as the diffusers script does (oneDNN builds its kernels, the allocator its pools)
  std::vector<double> ms;
  for (int r = 0; r < std::max(1, runs); ++r) {
    auto s = std::chrono::steady_clock::now();
    at::Tensor image = vae.decode(z);  // [1, 3, 8*latent, 8*latent]
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - s).count());
  }
  std::sort(ms.begin(), ms.end());
  std::printf("SD1.5 AutoencoderKL decode, [1, 4, %lld, %lld] -> %lldx%lld, %s, %d threads\n",
              static_cast<long long>(latent), static_cast<long long>(latent), static_cast<long long>(latent * 8),
              static_cast<long long>(latent * 8), dtype_name.c_str(), at::get_num_threads());
  std::printf("decode: median %.1f ms (min %.1f, max %.1f, %d runs after a warm-up)\n", median_sorted(ms), ms.front(),
              ms.back(),
              static_cast<int>(ms.size()));
  std::printf("peak RSS: %.0f MB\n", peak_rss_mb());
  std::printf("attention: %s\n", attention.c_str());
  std::printf("BLAS: %s\n", blas.reason.c_str());
  if (profile) {
    OpProfile ops;
    vae.decode(z);
    std::fputs(ops.report(16).c_str(), stdout);
  }
  return 0;
}
