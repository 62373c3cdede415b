// tessera_bench_dit: one denoising step's transformer work of a full-width DiT on CPU, random weights built from the
// published config (tools/bench/dit_configs.h; nothing is read from disk). Reports ms per step (median), GFLOP/s
// over the counted FLOPs (tools/bench/flop_counter.h), peak RSS and the parameter count.
//
// --model sd35m       the Stable Diffusion 3.5 medium SD3Transformer2DModel (24 blocks, 2.2 B parameters). Image
//                     tokens 1024 = 512² (latent 64×64, patch 2), 4096 = 1024² (latent 128×128); text 77 + 256
//                     tokens (CLIP ‖ T5), pooled 2048, timestep σ·1000 = 500.
// --model flux-slice  FLUX.1-dev's FluxTransformer2DModel at full width (3072 = 24 heads × 128, joint 4096, pooled
//                     768, RoPE axes 16/56/56, guidance embedding) with one double-stream and one single-stream
//                     block; 1024 tokens = 512² (packed 2×2 latent 32×32×64), 4096 = 1024²; 512 text tokens. Each
//                     block is also timed alone, and the full 19 + 38-block model is extrapolated from the slice.
//
// --cfg batched       one batch-2 forward per step (the guider's passes in one call; sd35m's default);
// --cfg separate      two batch-1 forwards per step (`batch_passes: false`);
// --cfg none          one batch-1 forward (FLUX.1-dev's guidance-distilled default: no CFG).
//
// --dtype bf16 builds the weights in bfloat16 (the `dtype: bf16` compute path); inputs are float32 either way.
// --attention math|chunked|sdpa picks dispatch_attention's backend (default: the process default, as the CLI).
// Timing: one warm-up step that also counts the FLOPs, then the median of --runs steps; --no-warmup counts on the
// first timed step instead (for the multi-minute configurations). --profile adds one step timed per ATen operator
// (engine/op_profile.h) and prints where the time went.
//
//   tessera_bench_dit --model sd35m|flux-slice [--tokens 1024|4096] [--dtype fp32|bf16]
//                     [--cfg batched|separate|none] [--runs N] [--threads T] [--attention NAME] [--chunk-rows N]
//                     [--no-warmup] [--profile]

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "tools/bench/bench_util.h"
#include "tools/bench/dit_configs.h"
#include "tools/bench/flop_counter.h"
#include "engine/op_profile.h"
#include "tools/bench/random_weights.h"
#include "tessera/runtime.h"
#include "models/common/attention_dispatch.h"
#include "models/transformers/transformer_flux.h"
#include "models/transformers/transformer_sd3.h"

using namespace tessera;
using namespace tessera::bench;
using Clock = std::chrono::steady_clock;

namespace {

struct Options {
  std::string model;
  int64_t tokens = 1024;
  int64_t text_tokens = 0;  // 0: the model's (333 / 512)
  std::string dtype = "fp32";
  std::string cfg;  // "" → the model's default
  int runs = 3;
  int threads = 0;
  std::string attention;
  int64_t chunk_rows = 0;
  bool warmup = true;
  bool profile = false;
};

std::string loadavg() {
  std::ifstream f("/proc/loadavg");
  std::string one;
  f >> one;
  return one;
}

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

struct Series {
  std::vector<double> ms;
  double median() const {
    std::vector<double> s = ms;
    std::sort(s.begin(), s.end());
    return s[s.size() / 2];
  }
  double min() const { return *std::min_element(ms.begin(), ms.end()); }
  double max() const { return *std::max_element(ms.begin(), ms.end()); }
};

/// Runs `step` once with the FLOP counter (warm-up), then `runs` timed times. Returns (GFLOP of one step, times).
/// Without warm-up the first timed run carries the counter (its overhead is per op call, negligible at these sizes).
std::pair<double, Series> measure(int runs, bool warmup, const std::function<void()>& step) {
  double gflop = 0.0;
  Series s;
  for (int r = warmup ? -1 : 0; r < runs; ++r) {
    std::optional<FlopCounter> count;
    if (r == (warmup ? -1 : 0)) count.emplace();
    auto t = Clock::now();
    step();
    const double ms = ms_since(t);
    if (count) gflop = count->flops() / 1e9;
    if (r >= 0) s.ms.push_back(ms);
  }
  return {gflop, s};
}

/// --profile: one more step with the per-operator timer, and its table.
void profile_step(const Options& o, const std::function<void()>& step) {
  if (!o.profile) return;
  OpProfile profile;
  step();
  std::fputs(profile.report(16).c_str(), stdout);
}

void print_series(const char* what, double gflop, const Series& s, const Options& o) {
  std::printf("%s: median %.1f ms (min %.1f, max %.1f, %d runs%s), %.1f GFLOP, %.1f GFLOP/s\n", what, s.median(),
              s.min(), s.max(), o.runs, o.warmup ? " after a warm-up" : ", no warm-up", gflop,
              gflop / (s.median() / 1000.0));
}

/// Latent side in patches for `tokens` image tokens (a square image).
int64_t side_of(int64_t tokens) {
  const auto side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(tokens))));
  if (side * side != tokens) {
    std::fprintf(stderr, "error: --tokens %lld is not a square number of patches\n", static_cast<long long>(tokens));
    std::exit(2);
  }
  return side;
}

/// The batch rows each call of a step covers: batched → {[0, 2)}, separate → {[0, 1), [1, 2)}, none → {[0, 1)}.
std::vector<std::pair<int64_t, int64_t>> calls_of(const std::string& cfg) {
  if (cfg == "batched") return {{0, 2}};
  if (cfg == "separate") return {{0, 1}, {1, 2}};
  return {{0, 1}};
}

int bench_sd35m(const Options& o, at::ScalarType dtype) {
  const int64_t side = side_of(o.tokens);  // patches per side; latent = 2 × side
  const int64_t text = o.text_tokens > 0 ? o.text_tokens : 77 + 256;
  auto t0 = Clock::now();
  auto model = build_random<SD3Transformer2DModelImpl>(
      dtype, SD3Transformer2DModelConfig::from_json(nlohmann::json::parse(kSd35MTransformerConfig), "SD3.5-M config"));
  const double build_s = ms_since(t0) / 1000.0;
  const double weights_rss = current_rss_mb();
  const int64_t params = count_parameters(*model);
  c10::InferenceMode guard;  // after the build: materialise replaces parameter storage (set_data)

  const at::Tensor latents = at::randn({2, 16, 2 * side, 2 * side});  // [B, C, H/8, W/8]
  const at::Tensor prompt = at::randn({2, text, 4096});                // [B, 77 + 256, joint_attention_dim]
  const at::Tensor pooled = at::randn({2, 2048});                      // [B, CLIP-L ‖ CLIP-G pooled]
  const at::Tensor timestep = at::full({2}, 500.0);                    // σ · 1000
  const auto calls = calls_of(o.cfg);
  const auto step = [&] {
    for (const auto& [b, e] : calls)
      model->forward(latents.slice(0, b, e), prompt.slice(0, b, e), pooled.slice(0, b, e), timestep.slice(0, b, e));
  };
  const std::string start_load = loadavg();
  auto [gflop, s] = measure(o.runs, o.warmup, step);

  std::printf("SD3.5-medium SD3Transformer2DModel (random weights), %lld image tokens (%lldx%lld latent, %lld px) + "
              "%lld text tokens, %s, cfg %s (%zu call%s of batch %lld per step), %d threads, attention %s\n",
              static_cast<long long>(o.tokens), static_cast<long long>(2 * side), static_cast<long long>(2 * side),
              static_cast<long long>(16 * side), static_cast<long long>(text), o.dtype.c_str(), o.cfg.c_str(),
              calls.size(), calls.size() == 1 ? "" : "s", static_cast<long long>(calls[0].second - calls[0].first),
              at::get_num_threads(), attention_backend_name(default_attention_backend()));
  std::printf("params: %.1f M (built in %.1f s, RSS after build %.0f MB)\n", static_cast<double>(params) / 1e6,
              build_s, weights_rss);
  print_series("step", gflop, s, o);
  if (calls.size() > 1) std::printf("per call: median %.1f ms\n", s.median() / static_cast<double>(calls.size()));
  profile_step(o, step);
  std::printf("peak RSS: %.0f MB\n", peak_rss_mb());
  std::printf("load average: %s at start, %s at end\n", start_load.c_str(), loadavg().c_str());
  return 0;
}

int bench_flux_slice(const Options& o, at::ScalarType dtype) {
  const int64_t side = side_of(o.tokens);  // packed tokens per side; latent = 2 × side
  const int64_t text = o.text_tokens > 0 ? o.text_tokens : 512;
  auto t0 = Clock::now();
  auto model = build_random<FluxTransformer2DModelImpl>(
      dtype, FluxTransformer2DModelConfig::from_json(nlohmann::json::parse(kFluxSliceConfig), "FLUX slice config"));
  const double build_s = ms_since(t0) / 1000.0;
  const double weights_rss = current_rss_mb();
  const int64_t params = count_parameters(*model);
  const int64_t double_params = count_parameters(*model->transformer_blocks[0]);
  const int64_t single_params = count_parameters(*model->single_transformer_blocks[0]);
  const int64_t D = model->config.inner_dim();
  c10::InferenceMode guard;  // after the build: materialise replaces parameter storage (set_data)

  const at::Tensor latents = at::randn({2, o.tokens, 64});  // [B, (H/16)(W/16), 4C] packed 2×2
  const at::Tensor prompt = at::randn({2, text, 4096});     // [B, 512, joint_attention_dim] (T5)
  const at::Tensor pooled = at::randn({2, 768});            // [B, CLIP-L pooled]
  const at::Tensor timestep = at::full({2}, 0.5);           // t / 1000
  const at::Tensor guidance = at::full({2}, 3.5);
  // img_ids (0, row, col), txt_ids zeros, as the FLUX pipeline prepares them.
  const at::Tensor rows = at::arange(side, at::kFloat).view({side, 1}).expand({side, side});  // [h, w]
  const at::Tensor cols = at::arange(side, at::kFloat).view({1, side}).expand({side, side});  // [h, w]
  const at::Tensor img_ids = at::stack({at::zeros({side, side}), rows, cols}, -1).reshape({o.tokens, 3});  // [S_img, 3]
  const at::Tensor txt_ids = at::zeros({text, 3});                                                    // [S_txt, 3]
  const auto calls = calls_of(o.cfg);
  const auto step = [&] {
    for (const auto& [b, e] : calls)
      model->forward(latents.slice(0, b, e), prompt.slice(0, b, e), pooled.slice(0, b, e), timestep.slice(0, b, e),
                     img_ids, txt_ids, guidance.slice(0, b, e));
  };
  const std::string start_load = loadavg();
  auto [gflop, s] = measure(o.runs, o.warmup, step);

  // Each block alone, on inputs of the shapes the model gives it (random values), batch as one call of the step.
  const int64_t rows_per_call = calls[0].second - calls[0].first;
  const auto opts = at::TensorOptions().dtype(dtype);
  const at::Tensor h = at::randn({rows_per_call, o.tokens, D}, opts);  // [B, S_img, D]
  const at::Tensor c = at::randn({rows_per_call, text, D}, opts);      // [B, S_txt, D]
  const at::Tensor temb = at::randn({rows_per_call, D}, opts);         // [B, D]
  const auto rope = model->pos_embed->forward(at::cat({txt_ids, img_ids}, 0));  // ([S_txt + S_img, 128]) × 2
  auto& dbl = *model->transformer_blocks[0]->as<FluxTransformerBlockImpl>();
  auto& sgl = *model->single_transformer_blocks[0]->as<FluxSingleTransformerBlockImpl>();
  const double n_calls = static_cast<double>(calls.size());
  auto [dbl_gflop, dbl_s] = measure(o.runs, o.warmup, [&] { dbl.forward(h, c, temb, rope); });
  auto [sgl_gflop, sgl_s] = measure(o.runs, o.warmup, [&] { sgl.forward(h, c, temb, rope); });

  std::printf("FLUX.1-dev FluxTransformer2DModel slice (1 double + 1 single block, random weights), %lld image tokens "
              "(%lld px) + %lld text tokens, %s, cfg %s (%zu call%s of batch %lld per step), %d threads, attention %s\n",
              static_cast<long long>(o.tokens), static_cast<long long>(16 * side), static_cast<long long>(text),
              o.dtype.c_str(), o.cfg.c_str(), calls.size(), calls.size() == 1 ? "" : "s",
              static_cast<long long>(rows_per_call), at::get_num_threads(),
              attention_backend_name(default_attention_backend()));
  std::printf("params: slice %.1f M (double block %.1f M, single block %.1f M; built in %.1f s, RSS after build %.0f MB)\n",
              static_cast<double>(params) / 1e6, static_cast<double>(double_params) / 1e6,
              static_cast<double>(single_params) / 1e6, build_s, weights_rss);
  print_series("step (slice)", gflop, s, o);
  print_series("double block (one call)", dbl_gflop, dbl_s, o);
  print_series("single block (one call)", sgl_gflop, sgl_s, o);
  profile_step(o, step);
  const double nd = kFluxDoubleBlocks - 1, ns = kFluxSingleBlocks - 1;
  const double full_ms = s.median() + n_calls * (nd * dbl_s.median() + ns * sgl_s.median());
  const double full_gflop = gflop + n_calls * (nd * dbl_gflop + ns * sgl_gflop);
  const double full_params = static_cast<double>(params) + nd * static_cast<double>(double_params) +
                             ns * static_cast<double>(single_params);
  std::printf("extrapolated to %d + %d blocks: %.1f s per step, %.0f GFLOP, %.1f GFLOP/s, %.2f B params (%.1f GB "
              "weights in %s)\n",
              kFluxDoubleBlocks, kFluxSingleBlocks, full_ms / 1000.0, full_gflop, full_gflop / (full_ms / 1000.0),
              full_params / 1e9, full_params * static_cast<double>(c10::elementSize(dtype)) / 1e9, o.dtype.c_str());
  std::printf("peak RSS: %.0f MB\n", peak_rss_mb());
  std::printf("load average: %s at start, %s at end\n", start_load.c_str(), loadavg().c_str());
  return 0;
}

int usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s --model sd35m|flux-slice [--tokens 1024|4096] [--text-tokens N] [--dtype fp32|bf16]\n"
               "          [--cfg batched|separate|none] [--runs N] [--threads T] [--attention math|chunked|sdpa]\n"
               "          [--chunk-rows N] [--no-warmup] [--profile]\n",
               argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has = i + 1 < argc;
    if (a == "--model" && has) o.model = argv[++i];
    else if (a == "--tokens" && has) o.tokens = std::atoll(argv[++i]);
    else if (a == "--text-tokens" && has) o.text_tokens = std::atoll(argv[++i]);
    else if (a == "--dtype" && has) o.dtype = argv[++i];
    else if (a == "--cfg" && has) o.cfg = argv[++i];
    else if (a == "--runs" && has) o.runs = std::atoi(argv[++i]);
    else if (a == "--threads" && has) o.threads = std::atoi(argv[++i]);
    else if (a == "--attention" && has) o.attention = argv[++i];
    else if (a == "--chunk-rows" && has) o.chunk_rows = std::atoll(argv[++i]);
    else if (a == "--no-warmup") o.warmup = false;
    else if (a == "--profile") o.profile = true;
    else return usage(argv[0]);
  }
  if (o.cfg.empty()) o.cfg = o.model == "sd35m" ? "batched" : "none";
  if ((o.model != "sd35m" && o.model != "flux-slice") || (o.dtype != "fp32" && o.dtype != "bf16") ||
      (o.cfg != "batched" && o.cfg != "separate" && o.cfg != "none") || o.runs < 1 || o.tokens < 1)
    return usage(argv[0]);
  try {
    const BlasSelection blas = select_blas_core();  // as the CLI does
    configure_threads(o.threads);
    if (!o.attention.empty()) {
      const auto backend = attention_backend_from_name(o.attention);
      if (!backend) return usage(argv[0]);
      set_default_attention_backend(*backend);
    }
    if (o.chunk_rows > 0) set_attention_chunk_size(o.chunk_rows);
    torch::manual_seed(0);
    const at::ScalarType dtype = o.dtype == "bf16" ? at::kBFloat16 : at::kFloat;
    const int rc = o.model == "sd35m" ? bench_sd35m(o, dtype) : bench_flux_slice(o, dtype);
    std::printf("BLAS: %s\n", blas.reason.c_str());
    if (!blas.after.empty()) std::printf("OpenBLAS core in use: %s\n", blas.after.c_str());
    return rc;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
