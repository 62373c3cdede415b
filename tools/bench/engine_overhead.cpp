// What the engine costs around a block's own work: a leaf call (BlockState construction, run, commit)
// and one iteration of a loop block with N trivial children. The blocks only pass a tensor handle on,
// so the figures are pure orchestration overhead, comparable with diffusers' per-step overhead
// (../shared/bench/BASELINES.md).
//
//   tessera_bench_engine --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include "tessera/block.h"
#include "tessera/components.h"
#include "tessera/registry.h"

using namespace tessera;

namespace {

/// Reads one tensor and writes it back unchanged: a block with no work of its own.
class PassThrough final : public LeafBlock {
 public:
  BlockSpec spec() const override {
    return BlockSpec("bench.pass_through", "latents → latents, unchanged")
        .input({"latents", Kind::Tensor, "latents", true})
        .output({"latents", Kind::Tensor, "latents"});
  }
  void run(Components&, BlockState& s) const override { s.set("latents", s.get("latents")); }
};

BlockPtr pass_through(const std::string& name) {
  auto b = std::make_shared<PassThrough>();
  b->set_name(name);
  return b;
}

/// One execution context with empty components, as a pipeline run has.
struct Harness {
  Registry registry;
  Components components{registry, nullptr};
  ExecContext ctx;
  PipelineState state;
  Harness() {
    ctx.components = &components;
    state.set("latents", at::zeros({1, 4, 64, 64}));
  }
};

void BM_LeafBlock(benchmark::State& st) {
  Harness h;
  BlockPtr leaf = pass_through("leaf");
  for (auto _ : st) leaf->execute(h.ctx, h.state, "leaf");
  st.SetLabel("BlockState + run + commit");
}
BENCHMARK(BM_LeafBlock);

// Iterations per execute(): the loop's own setup is amortised, what is left is the per-iteration cost
// (binding i and t, running N children, step observers/callbacks).
constexpr int64_t kIterations = 64;

void BM_LoopIteration(benchmark::State& st) {
  Harness h;
  std::vector<BlockPtr> children;
  for (int64_t c = 0; c < st.range(0); ++c) children.push_back(pass_through("child" + std::to_string(c)));
  LoopSequentialBlocks loop(children, "bench loop", LoopOptions{"timesteps", "", "i", "t"});
  loop.set_name("loop");
  h.state.set("timesteps", at::linspace(1.0, 0.0, kIterations));
  for (auto _ : st) loop.execute(h.ctx, h.state, "loop");
  // Time per loop iteration (an inverted rate of K iterations per execute; shown with its unit, e.g. 700ns).
  st.counters["per_iteration"] =
      benchmark::Counter(kIterations, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  st.SetLabel(std::to_string(st.range(0)) + " children");
}
BENCHMARK(BM_LoopIteration)->Arg(1)->Arg(4)->Arg(16);

// Baseline for the loop: binding `t` takes one element of the timesteps tensor per iteration.
void BM_TensorElement(benchmark::State& st) {
  at::Tensor t = at::linspace(1.0, 0.0, kIterations);
  int64_t i = 0;
  for (auto _ : st) benchmark::DoNotOptimize(t[i++ % kIterations]);
  st.SetLabel("timesteps[i] (one at::select)");
}
BENCHMARK(BM_TensorElement);

}  // namespace

BENCHMARK_MAIN();
