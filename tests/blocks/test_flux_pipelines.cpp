// The flux.* blocks through recipes/flux/auto.yaml on the tiny FLUX models in tests/fixtures/parity/models:
// workflows, determinism, true CFG batching, packing, and bad input. Numerical parity with diffusers: the flux_*
// pipeline cases of manifest_dit.json, run at the end of this file.
#include <catch2/catch.hpp>

#include <filesystem>
#include <sstream>

#include <tessera/builtins.h>

#include "blocks/flux/flux_common.h"
#include "tessera/pipeline.h"
#include "tessera/recipe.h"
#include "tessera/registry.h"
#include "tools/parity/parity.h"

using namespace tessera;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

Registry& reg() {
  static Registry r = [] {
    Registry x;
    register_builtins(x);
    return x;
  }();
  return r;
}

const std::string kSource = TESSERA_SOURCE_DIR;
const std::string kModels = kSource + "/tests/fixtures/parity/models/";

std::unique_ptr<Pipeline> flux_pipeline(const std::string& extra_yaml = {}) {
  const std::string path = kSource + "/recipes/flux/auto.yaml";
  if (extra_yaml.empty()) return Pipeline::from_recipe(load_recipe(path), reg());
  const std::string name = kSource + "/recipes/flux/test_extension.yaml";
  return Pipeline::from_recipe(parse_recipe("version: 1\nextends: auto.yaml\n" + extra_yaml, name), reg());
}

ValueMap text2image(int64_t seed, const std::string& model = "tiny-flux") {
  return {{"model", Value(kModels + model)},        {"prompt", Value("a fox in the snow")},
          {"seed", Value(seed)},                    {"num_inference_steps", Value(int64_t{2})},
          {"height", Value(int64_t{32})},           {"width", Value(int64_t{48})},
          {"max_sequence_length", Value(int64_t{32})}};
}

ImageBatch gradient_image(int64_t h, int64_t w) {
  at::Tensor y = at::linspace(0, 1, h).view({1, 1, h, 1}).expand({1, 1, h, w});
  at::Tensor x = at::linspace(0, 1, w).view({1, 1, 1, w}).expand({1, 1, h, w});
  return {at::cat({y, x, (x + y) / 2}, 1).contiguous()};
}

bool has_block(const Plan& plan, const std::string& path) {
  for (const auto& e : plan.blocks)
    if (e.path == path) return true;
  return false;
}

}  // namespace

TEST_CASE("flux/auto.yaml validates and plans text2image and image2image", "[flux]") {
  auto p = flux_pipeline();
  std::string problems;
  for (const auto& e : p->problems()) problems += std::string(e.what()) + "\n";
  CHECK(problems.empty());
  Plan t2i = p->plan("text2image"), i2i = p->plan("image2image");
  CHECK(has_block(t2i, "set_timesteps.text2image"));
  CHECK(has_block(t2i, "prepare_latents.text2image"));
  CHECK_FALSE(has_block(t2i, "prepare_latents.img2img.vae_encode"));
  CHECK(has_block(i2i, "set_timesteps.img2img"));
  CHECK(has_block(i2i, "prepare_latents.img2img.vae_encode"));
  CHECK(has_block(i2i, "prepare_latents.img2img.noise"));
  CHECK(has_block(i2i, "denoise.denoiser"));
  CHECK_THAT(format_plan(t2i), Contains("transformer") && Contains("text_encoder_2"));
}

TEST_CASE("flux packing: pack and unpack are inverse, ids are (0, row, col)", "[flux]") {
  at::Tensor z = at::randn({2, 16, 4, 6});
  at::Tensor packed = flux::pack_latents(z);
  REQUIRE(packed.sizes() == at::IntArrayRef({2, 6, 64}));
  // token (r, c) feature ch*4 + dy*2 + dx is z[ch, 2r + dy, 2c + dx]
  CHECK(packed[1][1 * 3 + 2][5 * 4 + 1 * 2 + 0].item<float>() == z[1][5][2 * 1 + 1][2 * 2 + 0].item<float>());
  CHECK(at::equal(flux::unpack_latents(packed, 4, 6), z));
  at::Tensor ids = flux::make_latent_image_ids(2, 3);
  REQUIRE(ids.sizes() == at::IntArrayRef({6, 3}));
  CHECK(ids[4][0].item<float>() == 0.0f);
  CHECK(ids[4][1].item<float>() == 1.0f);
  CHECK(ids[4][2].item<float>() == 1.0f);
  CHECK_THROWS_WITH(flux::latent_size(40, 48, 8, "x"), Contains("multiples of 16") && Contains("40×48"));
}

TEST_CASE("flux text2image: same seed, bit-identical image; another seed, another image", "[flux]") {
  auto p = flux_pipeline();
  auto run = [&](int64_t seed) { return p->run(text2image(seed)).get("images").images().pixels; };
  at::Tensor a = run(3), b = run(3), c = run(4);
  REQUIRE(a.sizes() == at::IntArrayRef({1, 3, 32, 48}));
  CHECK(at::equal(a, b));
  CHECK_FALSE(at::equal(a, c));
  CHECK(a.min().item<float>() >= 0.0f);
  CHECK(a.max().item<float>() <= 1.0f);
}

TEST_CASE("flux-dev: the embedded guidance changes the result; schnell ignores it", "[flux]") {
  ValueMap in = text2image(9, "tiny-flux-dev");
  in["output_type"] = Value("latent");
  in["guidance_scale"] = Value(3.5);
  at::Tensor g35 = flux_pipeline()->run(in).get("latents").tensor();
  in["guidance_scale"] = Value(1.0);
  at::Tensor g1 = flux_pipeline()->run(in).get("latents").tensor();
  CHECK_FALSE(at::allclose(g35, g1));
  ValueMap s = text2image(9);
  s["output_type"] = Value("latent");
  s["guidance_scale"] = Value(3.5);
  at::Tensor s35 = flux_pipeline()->run(s).get("latents").tensor();
  s["guidance_scale"] = Value(1.0);
  CHECK(at::equal(s35, flux_pipeline()->run(s).get("latents").tensor()));
}

TEST_CASE("flux true CFG: batched and separate passes agree; it needs a negative prompt", "[flux]") {
  ValueMap in = text2image(5);
  in["output_type"] = Value("latent");
  in["negative_prompt"] = Value("blurry");
  in["true_cfg_scale"] = Value(4.0);
  at::Tensor batched = flux_pipeline()->run(in).get("latents").tensor();
  at::Tensor separate =
      flux_pipeline("configs: {batch_passes: false}\n")->run(in).get("latents").tensor();
  CHECK(at::allclose(batched, separate, 1e-4, 1e-5));
  ValueMap no_cfg = in;
  no_cfg.erase("true_cfg_scale");
  CHECK_FALSE(at::allclose(batched, flux_pipeline()->run(no_cfg).get("latents").tensor(), 1e-3, 1e-3));
  in.erase("negative_prompt");
  CHECK_THROWS_WITH(flux_pipeline()->run(in), Contains("negative_prompt"));
}

TEST_CASE("flux image2image: strength keeps int(n - n*strength) steps; deterministic", "[flux]") {
  ValueMap in = text2image(7, "tiny-flux-dev");
  in["image"] = Value(gradient_image(32, 48));
  in["num_inference_steps"] = Value(int64_t{5});
  in["strength"] = Value(0.7);
  int steps = 0;
  RunOptions o;
  o.step_callbacks.push_back([&](const StepInfo&) { return ++steps, true; });
  at::Tensor a = flux_pipeline()->run(in, o).get("images").images().pixels;
  CHECK(steps == 4);  // t_start = int(5 - 3.5) = 1
  CHECK(at::equal(a, flux_pipeline()->run(in).get("images").images().pixels));
}

TEST_CASE("flux bad input: sizes, sequence length, another family's folder", "[flux]") {
  auto p = flux_pipeline();
  ValueMap in = text2image(1);
  SECTION("height not a multiple of the packing factor") {
    in["height"] = Value(int64_t{34});
    CHECK_THROWS_AS(p->run(in), InputError);
    CHECK_THROWS_WITH(p->run(in), Contains("multiples of 4") && Contains("34×48"));
  }
  SECTION("max_sequence_length above 512") {
    in["max_sequence_length"] = Value(int64_t{513});
    CHECK_THROWS_WITH(p->run(in), Contains("max_sequence_length") && Contains("513"));
  }
  SECTION("packed latents of the wrong shape") {
    in["latents"] = Value(at::zeros({1, 16, 16, 24}));
    CHECK_THROWS_WITH(p->run(in), Contains("packed shape [1, 96, 64]"));
  }
  SECTION("an SD3 folder under the FLUX recipe") {
    in["model"] = Value(kModels + "tiny-sd3");
    CHECK_THROWS_AS(p->run(in), ModelLoadError);
    CHECK_THROWS_WITH(p->run(in), Contains("StableDiffusion3Pipeline"));
  }
}

TEST_CASE("every FLUX pipeline case matches diffusers", "[parity][flux]") {
  register_builtin_case_runners();
  std::ostringstream out;
  ParityOptions options{kSource + "/tests/fixtures/parity/manifest_dit.json", "^flux_", "", true};
  const int rc = run_parity(options, out);
  INFO(out.str());
  CHECK(rc == 0);
  // txt2img (given latents, seeded), true CFG, dev guidance, dev img2img, modular dev
  CHECK(out.str().find("6 passed, 0 failed, 0 skipped") != std::string::npos);
}

TEST_CASE("flux: CFG-Zero*, APG and SLG guiders run on the FLUX transformer, their passes batched", "[flux]") {
  ValueMap in = text2image(12);
  in["output_type"] = Value("latent");
  in["negative_prompt"] = Value("blurry");
  for (const std::string guider :
       {"{type: ClassifierFreeZeroStarGuidance, creation: from_config, config: {guidance_scale: 4.0}}",
        "{type: AdaptiveProjectedGuidance, creation: from_config, config: {guidance_scale: 4.0}}",
        "{type: SkipLayerGuidance, creation: from_config, config: {guidance_scale: 4.0, "
        "skip_layer_guidance_layers: [0], skip_layer_guidance_start: 0.0, skip_layer_guidance_stop: 1.0}}"}) {
    INFO(guider);
    const std::string yaml = "components:\n  guider: " + guider + "\n";
    at::Tensor batched = flux_pipeline(yaml)->run(in).get("latents").tensor();
    at::Tensor separate =
        flux_pipeline(yaml + "configs: {batch_passes: false}\n")->run(in).get("latents").tensor();
    REQUIRE(batched.sizes() == at::IntArrayRef({1, 96, 64}));
    CHECK(at::isfinite(batched).all().item<bool>());
    CHECK(at::allclose(batched, separate, 1e-4, 1e-5));
  }
}
