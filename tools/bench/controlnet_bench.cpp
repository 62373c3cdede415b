// tessera_bench_controlnet: what a ControlNet adds to a denoising step. The full-size SD1.5 UNet and a ControlNet
// of the same architecture (built from the UNet's config as ControlNetModel.from_unet does, conditioning embedding
// (16, 32, 96, 256)), random weights, on CPU at 512² (64×64 latents, --size to change). One classifier-free-guided
// step is timed four ways (median of --runs):
//   unet batched      the UNet on the batch of both passes [2, 4, h, w] (what sd.loop_denoiser does)
//   cn+unet batched   the ControlNet, then the UNet with its residuals, each on the batch of 2 (sd.loop_controlnet_
//                     denoiser: the ControlNet runs inside the guider's batched model call)
//   unet separate     two batch-1 UNet calls (batch_passes: false; diffusers' modular guider)
//   cn+unet separate  two batch-1 ControlNet + UNet calls (the modular ControlNet step)
// and reported as ratios to the UNet alone. Peak RSS at the end.
//
//   tessera_bench_controlnet [--size 64] [--runs 3] [--threads T (default: every core, as the CLI)]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "tessera/runtime.h"
#include "models/controlnets/controlnet_model.h"
#include "models/loading/config_reader.h"
#include "models/unet/unet_2d_condition.h"
#include "tools/bench/bench_util.h"
#include "tools/bench/sd15_configs.h"

using namespace tessera;
using namespace tessera::bench;


int main(int argc, char** argv) {
  int64_t size = 64;
  int runs = 3;
  int threads = 0;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--size" && i + 1 < argc) size = std::atoll(argv[++i]);
    else if (a == "--runs" && i + 1 < argc) runs = std::atoi(argv[++i]);
    else if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr, "usage: %s [--size 64] [--runs N] [--threads T]\n", argv[0]);
      return 2;
    }
  }
  if (size <= 0 || size % 8 != 0 || runs <= 0) {
    std::fprintf(stderr, "--size must be a positive multiple of 8 and --runs positive\n");
    return 2;
  }
  const BlasSelection blas = select_blas_core();
  configure_threads(threads);  // as the CLI: all cores unless --threads
  c10::InferenceMode guard;
  torch::manual_seed(0);
  const nlohmann::json unet_json = nlohmann::json::parse(kSd15UNetConfig);
  UNet2DConditionModel unet(UNet2DConditionModelConfig::from_json(unet_json, "SD1.5 UNet"));
  nlohmann::json cn_json = unet_json;
  cn_json.erase("up_block_types");
  cn_json.erase("out_channels");
  cn_json["conditioning_embedding_out_channels"] = {16, 32, 96, 256};
  ModelConfig cn_config(cn_json, "SD1.5 ControlNet");
  ControlNetModel cn(ControlNetModelConfig::from_config(cn_config));
  unet->eval();
  cn->eval();

  const at::Tensor sample = at::randn({2, 4, size, size});
  const at::Tensor ehs = at::randn({2, 77, 768});
  const at::Tensor cond = at::rand({2, 3, size * 8, size * 8});
  const at::Tensor t = at::scalar_tensor(500, at::kLong);
  auto step = [&](bool controlnet, int64_t from, int64_t rows) {
    const at::Tensor x = sample.narrow(0, from, rows), e = ehs.narrow(0, from, rows);
    UNet2DConditionInputs in;
    if (controlnet) {
      ControlNetOutput r = cn->forward(x, t, e, cond.narrow(0, from, rows), {}, 0.7);
      in.down_block_additional_residuals = r.down_block_res_samples;
      in.mid_block_additional_residual = r.mid_block_res_sample;
    }
    return unet->forward(x, t, e, in);
  };
  const double unet_b = median_ms(runs, [&] { step(false, 0, 2); });
  const double cn_b = median_ms(runs, [&] { step(true, 0, 2); });
  const double unet_s = median_ms(runs, [&] { step(false, 0, 1), step(false, 1, 1); });
  const double cn_s = median_ms(runs, [&] { step(true, 0, 1), step(true, 1, 1); });

  int64_t unet_params = 0, cn_params = 0;
  for (const auto& p : unet->parameters()) unet_params += p.numel();
  for (const auto& p : cn->parameters()) cn_params += p.numel();
  std::printf("SD1.5 UNet (%.0f M params) + ControlNet (%.0f M params), %lldx%lld latent (%lld px), fp32, %d threads, "
              "median of %d\n",
              unet_params / 1e6, cn_params / 1e6, static_cast<long long>(size), static_cast<long long>(size),
              static_cast<long long>(size * 8), at::get_num_threads(), runs);
  std::printf("one CFG step, passes batched:  unet %.0f ms, controlnet+unet %.0f ms  (x%.2f)\n", unet_b, cn_b,
              cn_b / unet_b);
  std::printf("one CFG step, passes separate: unet %.0f ms, controlnet+unet %.0f ms  (x%.2f)\n", unet_s, cn_s,
              cn_s / unet_s);
  std::printf("batched vs separate with the ControlNet: x%.2f faster\n", cn_s / cn_b);
  std::printf("peak RSS: %.0f MB\n", peak_rss_mb());
  std::printf("BLAS: %s\n", blas.reason.c_str());
  return 0;
}
