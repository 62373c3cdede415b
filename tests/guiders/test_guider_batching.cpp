// Passes, batching and layer hooks, on the deterministic TinyAttentionNet: one batched call == one call per pass;
// a hook touches only its pass's rows; passes that would repeat a prediction are not run.
#include <catch2/catch.hpp>

#include "guiders/register.h"
#include "tests/guiders/tiny_attention_net.h"

using namespace tessera;
using tessera::testing::TinyAttentionNet;

namespace {

constexpr int64_t kBatch = 2, kTokens = 16, kDim = 8;

at::Tensor smooth(std::vector<int64_t> shape, double phase) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return at::cos(at::arange(n, at::kFloat) * 0.37 + phase).view(shape);
}

struct Inputs {
  at::Tensor latents = smooth({kBatch, kTokens, kDim}, 0.0);
  at::Tensor cond = smooth({kBatch, 5, kDim}, 1.0);
  at::Tensor uncond = smooth({kBatch, 5, kDim}, 2.5);
  GuiderFields fields() const {
    return {{"hidden_states", {latents, {}}}, {"encoder_hidden_states", {cond, uncond}}};
  }
};

/// The guided prediction at `step` of `T`, batched or not; `calls` receives the number of model calls.
at::Tensor guided(const std::string& type, const nlohmann::json& config, int64_t step, int64_t T, bool batch,
                  int* calls = nullptr) {
  GuiderPtr g = make_guider(type, config);
  TinyAttentionNet net(kDim);
  Inputs in;
  g->set_state(step, T, at::scalar_tensor(999 - step * 100, at::kLong));
  at::Tensor pred = guide(*g, in.fields(), net.model_fn(), batch).pred;
  if (calls) *calls = net.calls();
  return pred;
}

}  // namespace

TEST_CASE("batched and per-pass model calls give the same guided prediction", "[guiders]") {
  const std::vector<std::pair<std::string, nlohmann::json>> guiders{
      {"ClassifierFreeGuidance", {{"guidance_scale", 5.0}, {"guidance_rescale", 0.3}}},
      {"ClassifierFreeZeroStarGuidance", {{"guidance_scale", 5.0}}},
      {"AdaptiveProjectedGuidance", {{"adaptive_projected_guidance_momentum", -0.5}}},
      {"TangentialClassifierFreeGuidance", nlohmann::json::object()},
      {"MagnitudeAwareGuidance", nlohmann::json::object()},
      {"PerturbedAttentionGuidance", {{"perturbed_guidance_layers", {0}}, {"perturbed_guidance_stop", 0.9}}},
      {"SkipLayerGuidance", {{"skip_layer_guidance_layers", {1}}, {"skip_layer_guidance_stop", 0.9}}},
      {"SmoothedEnergyGuidance", {{"seg_guidance_layers", {0}}, {"seg_blur_sigma", 1.0}}},
  };
  for (const auto& [type, config] : guiders) {
    INFO(type);
    int batched_calls = 0, single_calls = 0;
    at::Tensor a = guided(type, config, 3, 10, true, &batched_calls);
    at::Tensor b = guided(type, config, 3, 10, false, &single_calls);
    CHECK(batched_calls == 1);
    CHECK(single_calls >= 2);
    CHECK(at::allclose(a, b, 1e-5, 1e-5));
  }
}

TEST_CASE("PAG's identity attention changes only the perturbed pass's rows", "[guiders]") {
  GuiderPtr g = make_guider("PerturbedAttentionGuidance",
                            {{"perturbed_guidance_layers", {0}}, {"perturbed_guidance_stop", 0.9}});
  g->set_state(3, 10, {});
  Inputs in;
  auto passes = g->prepare_inputs(in.fields());
  REQUIRE(passes.size() == 3);
  CHECK(passes[2].identifier == "pred_cond_skip");
  REQUIRE(passes[2].hooks.size() == 1);
  CHECK(passes[2].hooks[0].kind == LayerHookKind::IdentityAttention);

  std::vector<LayerHook> seen;
  TinyAttentionNet net(kDim);
  auto preds = run_passes(passes, [&](const std::map<std::string, at::Tensor>& x, const std::vector<LayerHook>& h) {
    seen = h;
    return net.forward(x.at("hidden_states"), x.at("encoder_hidden_states"), h);
  });
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].batch_start == 2 * kBatch);
  CHECK(seen[0].batch_size == kBatch);

  // The same batched call without hooks: cond and uncond rows bit-identical, the perturbed rows different.
  at::Tensor x = at::cat({in.latents, in.latents, in.latents});
  at::Tensor e = at::cat({in.cond, in.uncond, in.cond});
  at::Tensor plain = net.forward(x, e, {});
  at::Tensor hooked = net.forward(x, e, seen);
  CHECK(at::equal(hooked.narrow(0, 0, 2 * kBatch), plain.narrow(0, 0, 2 * kBatch)));
  CHECK_FALSE(at::allclose(hooked.narrow(0, 2 * kBatch, kBatch), plain.narrow(0, 2 * kBatch, kBatch)));
  CHECK(at::equal(preds.at("pred_cond"), plain.narrow(0, 0, kBatch)));
  CHECK(at::equal(preds.at("pred_cond_skip"), hooked.narrow(0, 2 * kBatch, kBatch)));
}

TEST_CASE("SLG's block skip changes only the perturbed pass's rows", "[guiders]") {
  GuiderPtr g = make_guider("SkipLayerGuidance", {{"skip_layer_guidance_layers", {1}}, {"skip_layer_guidance_stop", 0.9}});
  g->set_state(3, 10, {});
  auto passes = g->prepare_inputs(Inputs{}.fields());
  REQUIRE(passes.size() == 3);
  REQUIRE(passes[2].hooks.size() == 1);
  CHECK(passes[2].hooks[0].kind == LayerHookKind::SkipBlock);
  LayerHook hook = passes[2].hooks[0];
  hook.batch_start = 2 * kBatch;
  hook.batch_size = kBatch;
  Inputs in;
  TinyAttentionNet net(kDim);
  at::Tensor x = at::cat({in.latents, in.latents, in.latents});
  at::Tensor e = at::cat({in.cond, in.uncond, in.cond});
  at::Tensor plain = net.forward(x, e, {});
  at::Tensor hooked = net.forward(x, e, {hook});
  CHECK(at::equal(hooked.narrow(0, 0, 2 * kBatch), plain.narrow(0, 0, 2 * kBatch)));
  CHECK_FALSE(at::allclose(hooked.narrow(0, 2 * kBatch, kBatch), plain.narrow(0, 2 * kBatch, kBatch)));
  // Skipping the last block of the stack = the output of the first block alone, for those rows.
  LayerHook both = hook;
  both.layers.indices = {0, 1};
  CHECK(at::equal(net.forward(x, e, {both}).narrow(0, 2 * kBatch, kBatch), x.narrow(0, 2 * kBatch, kBatch)));
}

TEST_CASE("the unconditional pass is not run when guidance is inactive or inputs are the same", "[guiders]") {
  Inputs in;
  SECTION("outside the CFG window: one pass, one model call of the plain batch") {
    GuiderPtr g = make_guider("ClassifierFreeGuidance", {{"start", 0.5}});
    g->set_state(1, 10, {});
    CHECK(g->num_conditions() == 1);
    TinyAttentionNet net(kDim);
    GuiderOutput out = guide(*g, in.fields(), net.model_fn());
    CHECK(net.call_batches() == std::vector<int64_t>{kBatch});
    CHECK(at::equal(out.pred, net.forward(in.latents, in.cond, {})));
    g->set_state(5, 10, {});
    CHECK(g->num_conditions() == 2);
  }
  SECTION("guidance_scale 1 disables CFG") {
    GuiderPtr g = make_guider("ClassifierFreeGuidance", {{"guidance_scale", 1.0}});
    g->set_state(0, 10, {});
    CHECK(g->prepare_inputs(in.fields()).size() == 1);
  }
  SECTION("cond and uncond are the same tensor: one pass serves both identifiers") {
    GuiderPtr g = make_guider("ClassifierFreeGuidance", nlohmann::json::object());
    g->set_state(0, 10, {});
    GuiderFields same{{"hidden_states", {in.latents, {}}}, {"encoder_hidden_states", {in.cond, in.cond}}};
    auto passes = g->prepare_inputs(same);
    REQUIRE(passes.size() == 1);
    CHECK(passes[0].also == std::vector<std::string>{"pred_uncond"});
    TinyAttentionNet net(kDim);
    GuiderOutput out = guide(*g, same, net.model_fn());
    CHECK(net.calls() == 1);
    CHECK(net.call_batches() == std::vector<int64_t>{kBatch});
    CHECK(at::equal(out.pred, out.pred_cond));
    // A view of the same memory counts as the same tensor; an equal copy does not (no data comparison).
    GuiderFields view{{"hidden_states", {in.latents, {}}}, {"encoder_hidden_states", {in.cond, in.cond.view_as(in.cond)}}};
    CHECK(g->prepare_inputs(view).size() == 1);
    GuiderFields copy{{"hidden_states", {in.latents, {}}}, {"encoder_hidden_states", {in.cond, in.cond.clone()}}};
    CHECK(g->prepare_inputs(copy).size() == 2);
  }
  SECTION("a hooked pass is never folded, even on the same inputs") {
    GuiderPtr g = make_guider("PerturbedAttentionGuidance",
                              {{"perturbed_guidance_layers", {0}}, {"perturbed_guidance_stop", 0.9}});
    g->set_state(3, 10, {});
    GuiderFields same{{"hidden_states", {in.latents, {}}}, {"encoder_hidden_states", {in.cond, in.cond}}};
    auto passes = g->prepare_inputs(same);
    REQUIRE(passes.size() == 2);
    CHECK(passes[1].identifier == "pred_cond_skip");
  }
}

TEST_CASE("SLG and PAG with CFG off run the perturbed pass on the conditional inputs with hooks", "[guiders]") {
  // diffusers runs this pass on the unconditional embeddings without hooks; Tessera fixes that.
  for (const auto& [type, key] : {std::pair<std::string, std::string>{"SkipLayerGuidance", "skip_layer_guidance"},
                                  {"PerturbedAttentionGuidance", "perturbed_guidance"}}) {
    INFO(type);
    GuiderPtr g = make_guider(type, {{"guidance_scale", 1.0}, {key + "_layers", {0}}, {key + "_stop", 0.9}});
    g->set_state(3, 10, {});
    Inputs in;
    auto passes = g->prepare_inputs(in.fields());
    REQUIRE(passes.size() == 2);
    CHECK(passes[1].identifier == "pred_cond_skip");
    CHECK(passes[1].inputs.at("encoder_hidden_states").is_same(in.cond));
    CHECK_FALSE(passes[1].hooks.empty());
  }
}

TEST_CASE("a scalar timestep is shared by the batched passes", "[guiders]") {
  GuiderPtr g = make_guider("ClassifierFreeGuidance", nlohmann::json::object());
  g->set_state(0, 10, {});
  Inputs in;
  at::Tensor t = at::scalar_tensor(999, at::kLong);
  GuiderFields fields = in.fields();
  fields["timestep"] = {t, {}};
  int64_t seen_batch = 0;
  run_passes(g->prepare_inputs(fields), [&](const std::map<std::string, at::Tensor>& x, const std::vector<LayerHook>&) {
    CHECK(x.at("timestep").dim() == 0);
    seen_batch = x.at("hidden_states").size(0);
    return x.at("hidden_states");
  });
  CHECK(seen_batch == 2 * kBatch);
}
