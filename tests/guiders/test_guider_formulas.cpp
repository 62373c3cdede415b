// Formulas of the guiders without goldens (MagnitudeAware, APG-Mix, SEG's blur, AutoGuidance), written out
// independently here from diffusers' definitions; plus configuration errors and registry construction.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "tessera/error.h"
#include "guiders/adaptive_projected_guidance.h"
#include "guiders/adaptive_projected_mix_guidance.h"
#include "guiders/auto_guidance.h"
#include "guiders/register.h"
#include "guiders/smoothed_energy_guidance.h"

using namespace tessera;

namespace {

at::Tensor wave(std::vector<int64_t> shape, double phase, double freq = 0.37) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return at::cos(at::arange(n, at::kDouble) * freq + phase).view(shape).to(at::kFloat);
}

std::map<std::string, at::Tensor> preds(const at::Tensor& c, const at::Tensor& u) {
  return {{"pred_cond", c}, {"pred_uncond", u}};
}

}  // namespace

TEST_CASE("MagnitudeAwareGuidance scales CFG by exp(-alpha * |cond - uncond| / |uncond|)", "[guiders]") {
  at::Tensor c = wave({2, 4, 3, 3}, 0.0), u = wave({2, 4, 3, 3}, 0.4);
  for (bool original : {false, true}) {
    GuiderPtr g = make_guider("MagnitudeAwareGuidance", {{"use_original_formulation", original}});
    g->set_state(0, 10, {});
    at::Tensor got = g->forward(preds(c, u)).pred;
    for (int64_t b = 0; b < 2; ++b) {
      at::Tensor cb = c[b].to(at::kDouble), ub = u[b].to(at::kDouble);
      const double r = (cb - ub).norm().item<double>() / ub.norm().item<double>();
      const double w = original ? 10.0 * std::exp(-8.0 * r) : 1.0 + 9.0 * std::exp(-8.0 * r);
      at::Tensor expected = (original ? cb : ub) + w * (cb - ub);
      CHECK(at::allclose(got[b].to(at::kDouble), expected, 1e-5, 1e-5));
    }
  }
}

TEST_CASE("AdaptiveProjectedMixGuidance: CFG that warms the momentum, then APG after the start step", "[guiders]") {
  GuiderPtr g = make_guider("AdaptiveProjectedMixGuidance", {{"adaptive_projected_guidance_start_step", 2}});
  auto* mix = dynamic_cast<AdaptiveProjectedMixGuidance*>(g.get());
  REQUIRE(mix);
  at::Tensor running;  // reference momentum average: avg = diff + (-0.5) * avg
  for (int64_t step = 0; step < 5; ++step) {
    at::Tensor c = wave({1, 4, 4, 4}, step * 0.3), u = wave({1, 4, 4, 4}, 1.0 + step * 0.2);
    g->set_state(step, 5, {});
    g->prepare_inputs({});
    at::Tensor got = g->forward(preds(c, u)).pred;
    at::Tensor diff = (c - u).to(at::kDouble);
    running = running.defined() ? diff + -0.5 * running : diff;
    INFO("step " << step);
    CHECK(mix->is_apg_enabled() == (step > 2));
    if (step <= 2) {
      CHECK(at::allclose(got, u + 3.5 * (c - u), 1e-5, 1e-5));
    } else {
      // APG with threshold 10 and eta 0: clip |avg| to 10, keep the part orthogonal to cond.
      at::Tensor d = running * std::min(1.0, 10.0 / running.norm().item<double>());
      at::Tensor v1 = c.to(at::kDouble) / c.to(at::kDouble).norm();
      at::Tensor orthogonal = d - (d * v1).sum() * v1;
      CHECK(at::allclose(got.to(at::kDouble), u.to(at::kDouble) + 10.0 * orthogonal, 1e-4, 1e-4));
    }
  }
}

TEST_CASE("ClassifierFreeZeroStarGuidance returns zeros for the zero-init steps", "[guiders]") {
  GuiderPtr g = make_guider("ClassifierFreeZeroStarGuidance", {{"zero_init_steps", 2}});
  at::Tensor c = wave({1, 2, 2, 2}, 0.0), u = wave({1, 2, 2, 2}, 0.5);
  for (int64_t step : {0, 1}) {
    g->set_state(step, 10, {});
    CHECK(at::equal(g->forward(preds(c, u)).pred, at::zeros_like(c)));
  }
  g->set_state(2, 10, {});
  CHECK_FALSE(at::equal(g->forward(preds(c, u)).pred, at::zeros_like(c)));
}

TEST_CASE("SEG's blur: infinite sigma averages the square grid, finite sigma is a normalised Gaussian", "[guiders]") {
  at::Tensor q = wave({2, 18, 3}, 0.0, 1.3);  // 16 square tokens (4x4) + 2 left alone
  at::Tensor mean = smoothed_energy_blur(q, 9999999.0, 9999.0);
  at::Tensor expected_mean = q.narrow(1, 0, 16).mean(1, true).expand({2, 16, 3});
  CHECK(at::allclose(mean.narrow(1, 0, 16), expected_mean, 1e-6, 1e-6));
  CHECK(at::equal(mean.narrow(1, 16, 2), q.narrow(1, 16, 2)));
  // sigma 0.1: kernel size 1, the identity.
  CHECK(at::allclose(smoothed_energy_blur(q, 0.1, 9999.0), q, 1e-6, 1e-6));
  // A constant image stays constant under a normalised kernel with reflect padding.
  at::Tensor flat = at::full({1, 16, 3}, 0.7);
  CHECK(at::allclose(smoothed_energy_blur(flat, 1.0, 9999.0), flat, 1e-6, 1e-6));
  // A finite blur keeps the channel mean (up to edge reflection) but lowers the spread.
  at::Tensor blurred = smoothed_energy_blur(q, 1.0, 9999.0).narrow(1, 0, 16);
  CHECK(blurred.std(1).sum().item<double>() < q.narrow(1, 0, 16).std(1).sum().item<double>());
}

TEST_CASE("SmoothedEnergyGuidance's extra pass carries the blur hook (diffusers never applies it)", "[guiders]") {
  GuiderPtr g = make_guider("SmoothedEnergyGuidance", {{"seg_guidance_layers", {0, 1}}, {"seg_blur_sigma", 3.0},
                                                       {"seg_blur_threshold_inf", 100.0}});
  g->set_state(5, 10, {});
  at::Tensor x = wave({1, 4}, 0.0);
  auto passes = g->prepare_inputs({{"x", {x, x * 2}}});
  REQUIRE(passes.size() == 3);
  CHECK(passes[2].identifier == "pred_cond_seg");
  CHECK(passes[2].inputs.at("x").is_same(x));
  REQUIRE(passes[2].hooks.size() == 2);
  CHECK(passes[2].hooks[0].kind == LayerHookKind::SmoothedEnergyBlur);
  CHECK(passes[2].hooks[0].blur_sigma == 3.0);
  CHECK(passes[2].hooks[0].blur_threshold_inf == 100.0);
  // Combination formula: uncond + 7.5 (cond - uncond) + 2.8 (cond - seg).
  at::Tensor c = wave({1, 3}, 0.0), u = wave({1, 3}, 1.0), s = wave({1, 3}, 2.0);
  at::Tensor got = g->forward({{"pred_cond", c}, {"pred_uncond", u}, {"pred_cond_seg", s}}).pred;
  CHECK(at::allclose(got, u + 7.5 * (c - u) + 2.8 * (c - s)));
}

TEST_CASE("AutoGuidance degrades the unconditional pass with its layer hooks", "[guiders]") {
  GuiderPtr g = make_guider("AutoGuidance", {{"auto_guidance_layers", {1}}, {"dropout", 0.5}});
  g->set_state(0, 10, {});
  at::Tensor x = wave({1, 4}, 0.0), n = wave({1, 4}, 1.0);
  auto passes = g->prepare_inputs({{"x", {x, n}}});
  REQUIRE(passes.size() == 2);
  CHECK(passes[0].hooks.empty());
  CHECK(passes[1].inputs.at("x").is_same(n));
  REQUIRE(passes[1].hooks.size() == 1);
  CHECK(passes[1].hooks[0].kind == LayerHookKind::SkipBlock);
  CHECK(passes[1].hooks[0].dropout == 0.5);
  at::Tensor c = wave({1, 3}, 0.0), u = wave({1, 3}, 1.0);
  CHECK(at::allclose(g->forward(preds(c, u)).pred, u + 7.5 * (c - u)));
  CHECK_THROWS_AS(make_guider("AutoGuidance", {{"auto_guidance_layers", {1}}}), ValidationError);
  GuiderPtr from_config = make_guider(
      "AutoGuidance", {{"auto_guidance_config", {{"indices", {0}}, {"skip_ff", false}, {"dropout", 0.2}}}});
  auto* ag = dynamic_cast<AutoGuidance*>(from_config.get());
  REQUIRE(ag);
  REQUIRE(ag->hooks().size() == 1);
  CHECK(ag->hooks()[0].kind == LayerHookKind::SkipAttention);
}

TEST_CASE("guider configs: unknown names and fields are errors that name them", "[guiders]") {
  try {
    make_guider("ClassifierFreeGuidence");
    FAIL("no error");
  } catch (const ValidationError& e) {
    CHECK(std::string(e.what()).find("ClassifierFreeGuidance") != std::string::npos);
  }
  try {
    make_guider("ClassifierFreeGuidance", {{"guidance_scael", 5.0}});
    FAIL("no error");
  } catch (const ValidationError& e) {
    CHECK(std::string(e.what()).find("guidance_scael") != std::string::npos);
    CHECK(e.hint().find("guidance_scale") != std::string::npos);
  }
  try {
    make_guider("ClassifierFreeGuidance", {{"guidance_scale", "high"}});
    FAIL("no error");
  } catch (const ValidationError& e) {
    CHECK(std::string(e.what()).find("guidance_scale") != std::string::npos);
  }
  CHECK_THROWS_AS(make_guider("ClassifierFreeGuidance", {{"start", 0.8}, {"stop", 0.5}}), ValidationError);
  CHECK_THROWS_AS(make_guider("SkipLayerGuidance", nlohmann::json::object()), ValidationError);
  CHECK_THROWS_AS(make_guider("SkipLayerGuidance", {{"skip_layer_config", {{"indices", {0}}, {"skip_attn", true}}}}),
                  ValidationError);
  CHECK_THROWS_AS(make_guider("ClassifierFreeGuidance", {{"_class_name", "SkipLayerGuidance"}}), ValidationError);
  // diffusers' metadata keys are accepted, and the effective config records defaults.
  GuiderPtr g = make_guider("ClassifierFreeGuidance", {{"_class_name", "ClassifierFreeGuidance"},
                                                       {"_diffusers_version", "0.40.0"}, {"guidance_scale", 5}});
  CHECK(g->config()["guidance_scale"] == 5.0);
  CHECK(g->config()["guidance_rescale"] == 0.0);
  CHECK(builtin_guider_types().size() == 10);
}

TEST_CASE("guiders come from the registry: recipe config map or guider_config.json", "[guiders]") {
  Registry registry;
  register_builtin_guiders(registry);
  CHECK(registry.component_types(ComponentCategory::Guider).size() == 10);

  ComponentSpec spec;
  spec.name = "guider";
  spec.type = "PerturbedAttentionGuidance";
  spec.creation = Creation::FromConfig;
  spec.config = Value(ValueMap{{"guidance_scale", Value(5.0)}, {"perturbed_guidance_layers", Value(std::vector<int64_t>{2})}});
  auto pag = std::dynamic_pointer_cast<Guider>(registry.create_component(spec));
  REQUIRE(pag);
  CHECK(pag->guidance_scale() == 5.0);

  const auto dir = std::filesystem::temp_directory_path() / "tessera_guider_config_test" / "guider";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "guider_config.json")
      << R"({"_class_name": "SkipLayerGuidance", "_diffusers_version": "0.40.0", "guidance_scale": 4.0,
            "skip_layer_guidance_layers": [7, 8], "skip_layer_guidance_scale": 3.0})";
  ComponentSpec from_file;
  from_file.name = "guider";
  from_file.type = "SkipLayerGuidance";
  from_file.from = dir.parent_path().string();
  from_file.subfolder = "guider";
  from_file.config = Value(ValueMap{{"guidance_scale", Value(6.0)}});  // recipe overrides the file
  auto slg = std::dynamic_pointer_cast<Guider>(registry.create_component(from_file));
  REQUIRE(slg);
  CHECK(slg->guidance_scale() == 6.0);
  CHECK(slg->config()["skip_layer_guidance_scale"] == 3.0);
  std::filesystem::remove_all(dir.parent_path());

  spec.config = Value(ValueMap{{"perturbed_guidance_layer", Value(std::vector<int64_t>{2})}});
  CHECK_THROWS_AS(registry.create_component(spec), ValidationError);
}
