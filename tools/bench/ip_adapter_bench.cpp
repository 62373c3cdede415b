// tessera_bench_ip_adapter: what an IP-Adapter adds to a run. The full-size SD1.5 UNet and an ip-adapter_sd15-shaped
// adapter (ImageProjection 1024 → 4 tokens × 768, to_k_ip / to_v_ip on the 16 cross-attention layers), random
// weights, on CPU at 512² (64×64 latents, --size to change). Timed (median of --runs):
//   per step   one classifier-free-guided step, passes batched [2, 4, h, w]: the UNet alone, and with the adapter's
//              tokens in the call (what sd.loop_denoiser does with ip_adapter_tokens), interleaved
//   per run    the image encoder (ViT-H/14 at 224², the encoder of ip-adapter_sd15: 32 layers, width 1280) on the
//              reference image and, for Plus, on the zero image; the projection (sd.prepare_ip_adapter, once)
// Peak RSS at the end. --no-encoder skips the encoder (2.5 GB of weights).
//
//   tessera_bench_ip_adapter [--size 64] [--runs 3] [--threads T (default: every core)] [--no-encoder]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "tessera/runtime.h"
#include "models/adapters/ip_adapter.h"
#include "models/adapters/ip_adapter_unet.h"
#include "models/unet/unet_2d_condition.h"
#include "models/vision/clip_vision_model.h"
#include "tools/bench/bench_util.h"
#include "tools/bench/sd15_configs.h"

using namespace tessera;
using namespace tessera::bench;


int main(int argc, char** argv) {
  int64_t size = 64;
  int runs = 3;
  int threads = 0;
  bool encoder = true;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--size" && i + 1 < argc) size = std::atoll(argv[++i]);
    else if (a == "--runs" && i + 1 < argc) runs = std::atoi(argv[++i]);
    else if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (a == "--no-encoder") encoder = false;
    else {
      std::fprintf(stderr, "usage: %s [--size 64] [--runs N] [--threads T] [--no-encoder]\n", argv[0]);
      return 2;
    }
  }
  if (size <= 0 || size % 8 != 0 || runs <= 0) {
    std::fprintf(stderr, "--size must be a positive multiple of 8 and --runs positive\n");
    return 2;
  }
  const BlasSelection blas = select_blas_core();
  configure_threads(threads);
  c10::InferenceMode guard;
  torch::manual_seed(0);
  UNet2DConditionModel unet(UNet2DConditionModelConfig::from_json(nlohmann::json::parse(kSd15UNetConfig), "SD1.5 UNet"));
  unet->eval();

  // ip-adapter_sd15's shapes: image_embeds [1024] → 4 tokens × 768; one [hidden, 768] pair per attn2 layer.
  auto adapter = std::make_shared<IPAdapterImpl>();
  adapter->file = "random ip-adapter_sd15";
  adapter->image_proj = std::make_shared<ImageProjectionImpl>(1024, 768, 4);
  adapter->register_module("image_proj", adapter->image_proj);
  for (const UNetIPAdapterLayer& l : unet_ip_adapter_layers(*unet)) {
    const int64_t hidden = l.attn->to_k->weight.size(0);
    adapter->layers[l.ip_id] = {at::randn({hidden, 768}) * 0.02, at::randn({hidden, 768}) * 0.02};
  }
  adapter->eval();

  const at::Tensor sample = at::randn({2, 4, size, size});
  const at::Tensor ehs = at::randn({2, 77, 768});
  const at::Tensor t = at::scalar_tensor(500, at::kLong);
  const at::Tensor embeds = at::randn({1, 1, 1024});
  at::Tensor tokens;
  const double proj_ms = median_ms(runs, [&] {
    tokens = at::cat({adapter->image_proj->project(at::zeros_like(embeds)), adapter->image_proj->project(embeds)});
  });  // [2, 1, 4, 768]

  // Interleaved (plain, with tokens, plain, …) so that drift of the shared machine hits both alike. The adapter
  // stays installed: a call without tokens is the plain UNet.
  const int layers = install_ip_adapter(*unet, *adapter, 0.6);
  UNet2DConditionInputs in;
  in.ip_hidden_states = {tokens};
  std::vector<double> plain_ms, ip_ms;
  unet->forward(sample, t, ehs, in);  // warm-up
  for (int r = 0; r < runs; ++r) {
    plain_ms.push_back(time_ms([&] { unet->forward(sample, t, ehs); }));
    ip_ms.push_back(time_ms([&] { unet->forward(sample, t, ehs, in); }));
  }
  std::sort(plain_ms.begin(), plain_ms.end());
  std::sort(ip_ms.begin(), ip_ms.end());
  const double plain = plain_ms[plain_ms.size() / 2], with_ip = ip_ms[ip_ms.size() / 2];

  std::printf("SD1.5 UNet + IP-Adapter (%d layers), %lldx%lld latent (%lld px), fp32, %d threads, median of %d\n",
              layers, static_cast<long long>(size), static_cast<long long>(size), static_cast<long long>(size * 8),
              at::get_num_threads(), runs);
  std::printf("one CFG step, passes batched: unet %.0f ms, unet with ip tokens %.0f ms  (x%.3f)\n", plain, with_ip,
              with_ip / plain);
  std::printf("image projection (negative + positive, once per run): %.2f ms\n", proj_ms);
  if (encoder) {
    CLIPVisionConfig vc;
    vc.hidden_size(1280).intermediate_size(5120).projection_dim(1024).num_hidden_layers(32).num_attention_heads(16)
        .patch_size(14).image_size(224).hidden_act("gelu");
    CLIPVisionModelWithProjection enc(vc);
    enc->eval();
    const at::Tensor pixels = at::randn({1, 3, 224, 224});
    const double base_ms = median_ms(runs, [&] { enc->forward(pixels, false); });
    const double plus_ms = median_ms(runs, [&] { enc->forward(pixels, true), enc->forward(at::zeros_like(pixels), true); });
    int64_t params = 0;
    for (const auto& p : enc->parameters()) params += p.numel();
    std::printf("image encoder ViT-H/14 (%.0f M params), once per run: base %.0f ms, Plus (image + zero image) %.0f ms\n",
                params / 1e6, base_ms, plus_ms);
  }
  std::printf("peak RSS: %.0f MB\n", peak_rss_mb());
  std::printf("BLAS: %s\n", blas.reason.c_str());
  return 0;
}
