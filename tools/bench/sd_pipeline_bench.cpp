// tessera_bench_sd: one warm SD/SDXL text2image pipeline call built from a recipe (default recipes/sd/auto.yaml on
// tiny-sd: 10 DDIM steps, CFG 7.5, seed 1), run through the engine API as the CLI runs it. Reports the call's wall
// time (median of --runs after one warm-up call that loads the components), a per-phase breakdown, and the
// per-step orchestration overhead = step wall time − time inside the UNet forward.
//
// How the UNet time is measured. The UNet is called from inside the sd.loop_denoiser block (via the guider), so
// block timings alone cannot separate it. The bench therefore
//  1. records, with an ExecObserver, every denoising step's wall time (from the end of the previous step, or the
//     start of the `denoise` loop, to the end of the step) and each leaf block's time inside the loop;
//  2. captures, during the warm-up call, the exact UNet inputs of every step (the guider's batched [uncond, cond]
//     input, or the two batch-1 inputs with --separate-passes, the timestep, the text embeddings and SDXL's added
//     conditioning);
//  3. after each measured pipeline call (interleaved, same thread count, same loaded module), replays those UNet
//     forwards directly, `--unet-reps` times per step, and keeps the median per step.
// overhead(step) = step wall − replayed UNet time of that step; the figure is the median over steps and runs.
// "outside denoiser" is a lower bound that needs no subtraction: the time of the loop's other blocks (scale the
// input, scheduler step) plus the loop's own bookkeeping, measured in the pipeline itself.
// Everything that is neither the UNet forward nor a block boundary (guider input concatenation, CFG combine,
// BlockState construction and commit, observers) counts as overhead, as in BASELINES.md's diffusers figures.
//
//   tessera_bench_sd [--recipe recipes/sd/auto.yaml] [--model DIR] [--steps 10] [--guidance 7.5] [--seed 1]
//                    [--runs 7] [--unet-reps 5] [--threads T] [--separate-passes] [--small-unet] [--prompt TEXT]
//
// BLAS: the CLI has OpenBLAS replace its generic fallback core; run with OPENBLAS_CORETYPE=Cooperlake (on this
// machine class) to get the same float32 matmul kernels here.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <torch/torch.h>

#include <tessera/builtins.h>

#include "tools/bench/bench_util.h"
#include "tessera/error.h"
#include "tessera/pipeline.h"
#include "tessera/recipe.h"
#include "tessera/registry.h"
#include "tessera/runtime.h"
#include "models/unet/unet_2d_condition.h"

using namespace tessera;
using namespace tessera::bench;
using Clock = std::chrono::steady_clock;

namespace {

double ms_since(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double, std::milli>(b - a).count(); }

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/// One UNet call as the denoiser makes it.
struct UNetCall {
  at::Tensor sample, timestep, ehs, text_embeds, time_ids;
};

/// Times steps and loop blocks; on the capture run, records the UNet inputs of every step.
class StepObserver : public ExecObserver {
 public:
  bool capture = false;
  bool separate = false, small_unet = false;
  std::vector<double> step_ms;                 ///< this run's steps
  std::map<std::string, double> block_ms;      ///< this run, per path (top-level and loop leaves)
  std::vector<std::vector<UNetCall>> calls;    ///< per step, filled on the capture run

  void reset() {
    step_ms.clear();
    block_ms.clear();
    starts_.clear();
  }
  void on_block_start(const std::string& path, const Block&, PipelineState& state) override {
    const auto now = Clock::now();
    starts_[path] = now;
    if (path == "denoise") last_step_end_ = now;
    if (capture && path == "denoise.denoiser") calls.push_back(unet_calls(state));
  }
  void on_block_end(const std::string& path, const Block&, PipelineState&) override {
    block_ms[path] += ms_since(starts_[path], Clock::now());
  }
  void on_step_end(const StepInfo& info) override {
    if (info.loop_path != "denoise") return;
    const auto now = Clock::now();
    step_ms.push_back(ms_since(last_step_end_, now));
    last_step_end_ = now;
  }

 private:
  std::vector<UNetCall> unet_calls(const PipelineState& s) const {
    auto get = [&](const char* name) { return s.has(name) ? s.get(name).tensor(name).clone() : at::Tensor(); };
    UNetCall cond{get("latent_model_input"), get("t"), get("prompt_embeds"), get("pooled_prompt_embeds"),
                  get("add_time_ids")};
    UNetCall uncond{cond.sample, cond.timestep, get("negative_prompt_embeds"), get("negative_pooled_prompt_embeds"),
                    get("negative_add_time_ids")};
    if (!uncond.ehs.defined()) return {cond};  // no CFG (guidance_scale <= 1)
    if (separate) return {uncond, cond};
    auto cat = [](const at::Tensor& a, const at::Tensor& b) { return a.defined() ? at::cat({a, b}) : a; };
    return {UNetCall{cat(uncond.sample, cond.sample), cond.timestep, cat(uncond.ehs, cond.ehs),
                     cat(uncond.text_embeds, cond.text_embeds), cat(uncond.time_ids, cond.time_ids)}};
  }
  std::map<std::string, Clock::time_point> starts_;
  Clock::time_point last_step_end_;
};

/// A config JSON object as a Value map (nulls left out: the default applies).
Value json_to_value(const nlohmann::json& j) {
  if (j.is_boolean()) return Value(j.get<bool>());
  if (j.is_number_integer()) return Value(j.get<int64_t>());
  if (j.is_number()) return Value(j.get<double>());
  if (j.is_string()) return Value(j.get<std::string>());
  if (j.is_array() && !j.empty() && j.front().is_string()) return Value(j.get<std::vector<std::string>>());
  if (j.is_array() && !j.empty() && j.front().is_number_integer()) return Value(j.get<std::vector<int64_t>>());
  if (j.is_array()) return Value(j.get<std::vector<double>>());
  ValueMap m;
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!it.value().is_null() && it.key()[0] != '_') m[it.key()] = json_to_value(it.value());
  return Value(m);
}

/// --small-unet: the model's UNet config with three 32-channel levels, no attention but the mid block's, one layer per block (random weights, built
/// from the config): same inputs and outputs as the real UNet, ~1 ms per call, so that step − UNet resolves the
/// orchestration overhead without the noise of a large subtraction.
void use_small_unet(Recipe& recipe, const std::string& recipe_path, std::string model) {
  if (model.empty())
    for (const auto& input : recipe.inputs)
      if (input.name == "model" && input.default_value) model = input.default_value->str("model");
  std::filesystem::path dir(model);
  if (dir.is_relative() && !std::filesystem::exists(dir)) dir = std::filesystem::path(recipe_path).parent_path() / dir;
  std::ifstream f(dir / "unet" / "config.json");
  if (!f) throw InputError("--small-unet: cannot read " + (dir / "unet" / "config.json").string());
  nlohmann::json j = nlohmann::json::parse(f);
  j["down_block_types"] = {"DownBlock2D", "DownBlock2D", "DownBlock2D"};  // mid-block attention at 1/4 size
  j["up_block_types"] = {"UpBlock2D", "UpBlock2D", "UpBlock2D"};
  j["block_out_channels"] = {32, 32, 32};
  j["layers_per_block"] = 1;
  j["attention_head_dim"] = 8;
  j["transformer_layers_per_block"] = 1;
  j["reverse_transformer_layers_per_block"] = nullptr;
  j["only_cross_attention"] = false;
  RecipeComponent& unet = recipe.components.at("unet");
  unet.spec.creation = Creation::FromConfig;
  unet.spec.from.clear();
  unet.spec.subfolder.clear();
  unet.spec.config = json_to_value(j);
}

const char* kUsage =
    "usage: tessera_bench_sd [--recipe PATH] [--model DIR] [--steps N] [--guidance G] [--seed S] [--runs N]\n"
    "                        [--unet-reps N] [--threads T] [--separate-passes] [--small-unet] [--prompt TEXT]\n";

}  // namespace

int main(int argc, char** argv) {
  std::string recipe_path = "recipes/sd/auto.yaml", model, prompt = "a photo of a cat";
  int64_t steps = 10, seed = 1;
  double guidance = 7.5;
  int runs = 7, unet_reps = 5, threads = 0;
  bool separate = false, small_unet = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--recipe" && has_value) recipe_path = argv[++i];
    else if (a == "--model" && has_value) model = argv[++i];
    else if (a == "--prompt" && has_value) prompt = argv[++i];
    else if (a == "--steps" && has_value) steps = std::atoll(argv[++i]);
    else if (a == "--seed" && has_value) seed = std::atoll(argv[++i]);
    else if (a == "--guidance" && has_value) guidance = std::atof(argv[++i]);
    else if (a == "--runs" && has_value) runs = std::max(1, std::atoi(argv[++i]));
    else if (a == "--unet-reps" && has_value) unet_reps = std::max(1, std::atoi(argv[++i]));
    else if (a == "--threads" && has_value) threads = std::atoi(argv[++i]);
    else if (a == "--separate-passes") separate = true;
    else if (a == "--small-unet") small_unet = true;
    else {
      std::fputs(kUsage, stderr);
      return 2;
    }
  }
  try {
    configure_threads(threads);
    Registry registry;
    register_builtins(registry);

    // --separate-passes: a recipe extending the chosen one with `configs: {batch_passes: false}`, parsed as if it
    // lived next to it (so `extends` and relative model paths resolve as for the original).
    const std::string base = std::filesystem::path(recipe_path).filename().string();
    const std::string next_to_it = (std::filesystem::path(recipe_path).parent_path() / "bench_separate.yaml").string();
    Recipe recipe = separate ? parse_recipe("version: 1\nextends: " + base + "\nconfigs: {batch_passes: false}\n",
                                            next_to_it)
                             : load_recipe(recipe_path);
    if (small_unet) use_small_unet(recipe, recipe_path, model);
    auto pipe = Pipeline::from_recipe(std::move(recipe), registry);
    pipe->validate();

    ValueMap in;
    in["prompt"] = Value(prompt);
    in["seed"] = Value(seed);
    in["num_inference_steps"] = Value(steps);
    in["guidance_scale"] = Value(guidance);
    if (!model.empty()) in["model"] = Value(model);

    StepObserver obs;
    obs.separate = separate;
    RunOptions opts;
    opts.observers.push_back(&obs);

    // Warm-up: loads the components and captures the UNet inputs.
    obs.capture = true;
    auto t0 = Clock::now();
    pipe->run(in, opts);
    const double first_ms = ms_since(t0, Clock::now());
    obs.capture = false;
    auto unet = pipe->components().get_as<UNet2DConditionModelImpl>("unet");

    std::vector<double> call_ms, overhead_ms, step_ms, unet_ms, outside_ms;
    std::map<std::string, std::vector<double>> blocks;
    for (int r = 0; r < runs; ++r) {
      obs.reset();
      auto s = Clock::now();
      pipe->run(in, opts);
      call_ms.push_back(ms_since(s, Clock::now()));
      for (const auto& [path, ms] : obs.block_ms) blocks[path].push_back(ms);
      const double loop_leaves = obs.block_ms["denoise.denoiser"];
      double steps_total = 0.0;
      for (double v : obs.step_ms) steps_total += v;
      outside_ms.push_back((steps_total - loop_leaves) / static_cast<double>(obs.step_ms.size()));

      // Replay this run's UNet calls (interleaved with the pipeline calls).
      c10::InferenceMode guard;
      for (size_t k = 0; k < obs.step_ms.size() && k < obs.calls.size(); ++k) {
        std::vector<double> reps;
        for (int j = 0; j < unet_reps; ++j) {
          auto u = Clock::now();
          for (const UNetCall& c : obs.calls[k]) {
            UNet2DConditionInputs extra;
            extra.text_embeds = c.text_embeds;
            extra.time_ids = c.time_ids;
            at::Tensor out = unet->forward(c.sample, c.timestep, c.ehs, extra);
          }
          reps.push_back(ms_since(u, Clock::now()));
        }
        const double unet_step = median(reps);
        unet_ms.push_back(unet_step);
        step_ms.push_back(obs.step_ms[k]);
        overhead_ms.push_back(obs.step_ms[k] - unet_step);
      }
    }

    const size_t calls_per_step = obs.calls.empty() ? 0 : obs.calls.front().size();
    if (small_unet) std::printf("UNet: --small-unet (the model's UNet config reduced to three 32-channel levels without attention but the mid block's)\n");
    std::printf("recipe %s%s, %lld steps, guidance %.2f, seed %lld, %d threads\n", recipe_path.c_str(),
                separate ? " + batch_passes: false" : "", static_cast<long long>(steps), guidance,
                static_cast<long long>(seed), at::get_num_threads());
    std::printf("UNet calls per step: %zu (batch %lld)\n", calls_per_step,
                calls_per_step ? static_cast<long long>(obs.calls.front().front().sample.size(0)) : 0LL);
    std::printf("first call (loads components): %.1f ms\n", first_ms);
    std::printf("pipeline call: median %.1f ms (min %.1f, max %.1f, %d runs)\n", median(call_ms),
                *std::min_element(call_ms.begin(), call_ms.end()), *std::max_element(call_ms.begin(), call_ms.end()),
                runs);
    std::printf("per step: wall %.3f ms, UNet (replayed) %.3f ms, overhead %.3f ms (median of %zu steps; "
                "quartiles %.3f..%.3f)\n",
                median(step_ms), median(unet_ms), median(overhead_ms), overhead_ms.size(), [&] {
                  auto v = overhead_ms;
                  std::sort(v.begin(), v.end());
                  return v[v.size() / 4];
                }(),
                [&] {
                  auto v = overhead_ms;
                  std::sort(v.begin(), v.end());
                  return v[(3 * v.size()) / 4];
                }());
    std::printf("per step outside the denoiser block (lower bound, no subtraction): %.3f ms\n", median(outside_ms));
    std::printf("blocks (median per call, ms):\n");
    for (const auto& [path, v] : blocks) std::printf("  %-32s %9.3f\n", path.c_str(), median(v));
    std::printf("peak RSS: %.0f MB; OPENBLAS_CORETYPE=%s\n", peak_rss_mb(),
                std::getenv("OPENBLAS_CORETYPE") ? std::getenv("OPENBLAS_CORETYPE") : "(unset)");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
