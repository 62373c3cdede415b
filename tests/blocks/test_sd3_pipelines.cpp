// The sd3.* blocks through recipes/sd3/auto.yaml on the tiny SD3 and SD3.5 models in tests/fixtures/parity/models:
// workflows, determinism, Skip Layer Guidance as a guider, bad input, and the sd3_* golden cases of
// manifest_dit.json (numerical parity with diffusers, through the parity runner).
#include <catch2/catch.hpp>

#include <filesystem>
#include <random>
#include <sstream>

#include <tessera/builtins.h>

#include "engine/checkpoint.h"
#include "tessera/pipeline.h"
#include "tessera/recipe.h"
#include "tessera/registry.h"
#include "tools/parity/parity.h"
#include "tools/parity/pipeline_cases.h"
#include "tools/parity/sd3_pipeline_cases.h"

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
const std::string kModels = kSource + "/tests/fixtures/parity/models";

std::unique_ptr<Pipeline> sd3_pipeline(const std::string& extra_yaml = {}) {
  const std::string path = kSource + "/recipes/sd3/auto.yaml";
  if (extra_yaml.empty()) return Pipeline::from_recipe(load_recipe(path), reg());
  // A small recipe that extends the shipped one (named as if next to it, so relative paths resolve the same).
  const std::string name = kSource + "/recipes/sd3/test_extension.yaml";
  return Pipeline::from_recipe(parse_recipe("version: 1\nextends: auto.yaml\n" + extra_yaml, name), reg());
}

ValueMap text2image(const std::string& model, int64_t seed, int64_t steps = 2) {
  return {{"model", Value(kModels + "/" + model)},
          {"prompt", Value("a photo of an astronaut")},
          {"seed", Value(seed)},
          {"num_inference_steps", Value(steps)},
          {"max_sequence_length", Value(int64_t{32})}};
}

ImageBatch gradient_image(int64_t h, int64_t w) {
  at::Tensor y = at::linspace(0, 1, h).view({1, 1, h, 1}).expand({1, 1, h, w});
  at::Tensor x = at::linspace(0, 1, w).view({1, 1, 1, w}).expand({1, 1, h, w});
  return {at::cat({y, x, (x + y) / 2}, 1).contiguous()};  // [1, 3, h, w] in [0, 1]
}

bool has_block(const Plan& plan, const std::string& path) {
  for (const auto& e : plan.blocks)
    if (e.path == path) return true;
  return false;
}

/// The latents after every step and the timestep tensor of every denoiser step, from the step callbacks.
struct Steps {
  std::vector<at::Tensor> latents, timesteps;
};
RunOptions record(Steps& steps) {
  RunOptions o;
  o.step_callbacks.push_back([&steps](const StepInfo& info) {
    steps.latents.push_back(info.state->get("latents").tensor().clone());
    steps.timesteps.push_back(info.state->get("timestep").tensor().clone());
    return true;
  });
  return o;
}

}  // namespace

TEST_CASE("sd3/auto.yaml validates and plans text2image and image2image", "[sd3]") {
  auto p = sd3_pipeline();
  std::string problems;
  for (const auto& e : p->problems()) problems += std::string(e.what()) + "\n";
  CHECK(problems.empty());
  Plan t2i = p->plan("text2image"), i2i = p->plan("image2image");
  CHECK(has_block(t2i, "text_encoder"));
  CHECK(has_block(t2i, "set_timesteps.text2image"));
  CHECK(has_block(t2i, "prepare_latents.text2image"));
  CHECK(has_block(t2i, "denoise.denoiser"));
  CHECK(has_block(t2i, "denoise.scheduler_step"));
  CHECK_FALSE(has_block(t2i, "prepare_latents.img2img.vae_encode"));
  CHECK(has_block(i2i, "set_timesteps.img2img"));
  CHECK(has_block(i2i, "prepare_latents.img2img.vae_encode"));
  CHECK(has_block(i2i, "prepare_latents.img2img.noise"));
  CHECK_FALSE(has_block(i2i, "prepare_latents.text2image"));
  for (const char* component : {"transformer", "text_encoder_3", "tokenizer_3", "text_encoder_2", "vae"})
    CHECK_THAT(format_plan(t2i), Contains(component));
  CHECK_THROWS_AS(p->plan("inpainting"), ValidationError);
}

TEST_CASE("sd3 text2image on SD3 and SD3.5: same seed, bit-identical image; another seed, another image", "[sd3]") {
  for (const std::string model : {"tiny-sd3", "tiny-sd35"}) {
    INFO(model);
    auto p = sd3_pipeline();
    PipelineState a = p->run(text2image(model, 5));
    at::Tensor ia = a.get("images").images().pixels;
    at::Tensor ib = p->run(text2image(model, 5)).get("images").images().pixels;
    at::Tensor ic = p->run(text2image(model, 6)).get("images").images().pixels;
    REQUIRE(ia.sizes() == at::IntArrayRef({1, 3, 64, 64}));  // transformer sample_size 32 × VAE factor 2
    CHECK(at::equal(ia, ib));
    CHECK_FALSE(at::equal(ia, ic));
    CHECK(ia.min().item<float>() >= 0.0f);
    CHECK(ia.max().item<float>() <= 1.0f);
    // 77 CLIP tokens + max_sequence_length T5 tokens at the T5 width; pooled = CLIP-L ‖ CLIP-G text_embeds.
    const int64_t width = model == "tiny-sd3" ? 32 : 96, pooled = model == "tiny-sd3" ? 64 : 80;
    CHECK(a.get("prompt_embeds").tensor().sizes() == at::IntArrayRef({1, 77 + 32, width}));
    CHECK(a.get("negative_prompt_embeds").tensor().sizes() == at::IntArrayRef({1, 77 + 32, width}));
    CHECK(a.get("pooled_prompt_embeds").tensor().sizes() == at::IntArrayRef({1, pooled}));
    CHECK(a.get("latents").tensor().sizes() == at::IntArrayRef({1, 16, 32, 32}));
  }
}

TEST_CASE("sd3 text2image: tiny-sd35 zero-pads the CLIP features to the T5 width", "[sd3]") {
  ValueMap in = text2image("tiny-sd35", 1, 1);
  in["output_type"] = Value("latent");
  at::Tensor pe = sd3_pipeline()->run(in).get("prompt_embeds").tensor();  // [1, 109, 96]
  // CLIP-L (32) + CLIP-G (48) = 80 features, padded with zeros to 96 on the 77 CLIP rows only.
  CHECK(at::equal(pe.slice(1, 0, 77).slice(2, 80), at::zeros({1, 77, 16})));
  CHECK(pe.slice(1, 0, 77).slice(2, 0, 80).abs().sum().item<double>() > 0.0);
  CHECK(pe.slice(1, 77).slice(2, 80).abs().sum().item<double>() > 0.0);  // the T5 rows use every feature
}

TEST_CASE("sd3 image2image on SD3 and SD3.5: strength 0.6 by default, deterministic", "[sd3]") {
  for (const std::string model : {"tiny-sd3", "tiny-sd35"}) {
    INFO(model);
    auto p = sd3_pipeline();
    ValueMap in = text2image(model, 3, 5);
    in["image"] = Value(gradient_image(64, 64));
    PipelineState a = p->run(in);
    CHECK(a.get("strength").to_float() == 0.6);
    CHECK(a.get("num_inference_steps").to_int() == 3);  // t_start = int(5 - 5 * 0.6) = 2: 3 of 5 steps
    CHECK(a.get("timesteps").tensor().size(0) == 3);
    at::Tensor ia = a.get("images").images().pixels;
    CHECK(ia.sizes() == at::IntArrayRef({1, 3, 64, 64}));
    CHECK(at::equal(ia, p->run(in).get("images").images().pixels));
    in["strength"] = Value(0.7);  // the flow rule: int(5 - 3.5) = 1, four steps (SD's rule would keep 3)
    CHECK(p->run(in).get("num_inference_steps").to_int() == 4);
  }
}

TEST_CASE("sd3 image2image resizes the image to the transformer's default size, as diffusers", "[sd3]") {
  ValueMap in = text2image("tiny-sd3", 4, 2);
  in["image"] = Value(gradient_image(48, 40));
  in["output_type"] = Value("latent");
  PipelineState s = sd3_pipeline()->run(in);
  CHECK(s.get("image_latents").tensor().sizes() == at::IntArrayRef({1, 16, 32, 32}));  // 64 × 64, not 48 × 40
  in["height"] = Value(int64_t{48});
  in["width"] = Value(int64_t{40});
  CHECK(sd3_pipeline()->run(in).get("latents").tensor().sizes() == at::IntArrayRef({1, 16, 24, 20}));
}

TEST_CASE("sd3: the guider's passes run as one transformer call; guidance_scale 1 needs no negative", "[sd3]") {
  ValueMap in = text2image("tiny-sd3", 11, 3);
  in["output_type"] = Value("latent");
  Steps batched_steps;
  at::Tensor batched = sd3_pipeline()->run(in, record(batched_steps)).get("latents").tensor();
  REQUIRE(batched_steps.timesteps.size() == 3);
  CHECK(batched_steps.timesteps[0].sizes() == at::IntArrayRef({2}));  // cond and uncond in one call
  at::Tensor separate =
      sd3_pipeline("configs: {batch_passes: false}\n")->run(in).get("latents").tensor();
  INFO("max |batched - separate| = " << (batched - separate).abs().max().item<double>());
  CHECK(at::allclose(batched, separate, 1e-4, 1e-4));  // batch-2 vs batch-1 kernels: reassociation only
  in["guidance_scale"] = Value(1.0);
  Steps single;
  PipelineState no_cfg = sd3_pipeline()->run(in, record(single));
  CHECK_FALSE(no_cfg.has("negative_prompt_embeds"));
  CHECK_FALSE(no_cfg.has("negative_pooled_prompt_embeds"));
  CHECK(single.timesteps[0].sizes() == at::IntArrayRef({1}));
  CHECK_FALSE(at::allclose(no_cfg.get("latents").tensor(), batched, 1e-3, 1e-3));
}

TEST_CASE("sd3: Skip Layer Guidance as a guider (diffusers' skip_guidance_layers)", "[sd3]") {
  // The classic pipeline's skip_guidance_layers=[0] with a window over the whole run: steps 1 … T-1 (the
  // window's start is exclusive) add a conditional pass with transformer block 0 skipped.
  const std::string slg =
      "components:\n  guider: {type: SkipLayerGuidance, creation: from_config, config: {guidance_scale: 7.0, "
      "skip_layer_guidance_layers: [0], skip_layer_guidance_start: 0.0, skip_layer_guidance_stop: 1.0}}\n";
  ValueMap in = text2image("tiny-sd35", 21, 3);
  in["output_type"] = Value("latent");
  Steps cfg_steps, slg_steps, again_steps;
  sd3_pipeline()->run(in, record(cfg_steps));
  sd3_pipeline(slg)->run(in, record(slg_steps));
  sd3_pipeline(slg)->run(in, record(again_steps));
  REQUIRE(slg_steps.latents.size() == 3);
  CHECK(slg_steps.timesteps[0].sizes() == at::IntArrayRef({2}));  // step 0: outside the window, CFG only
  CHECK(slg_steps.timesteps[1].sizes() == at::IntArrayRef({3}));  // cond, uncond, cond with block 0 skipped
  CHECK(at::equal(slg_steps.latents[0], cfg_steps.latents[0]));
  CHECK_FALSE(at::allclose(slg_steps.latents[1], cfg_steps.latents[1], 1e-4, 1e-4));
  for (size_t k = 0; k < 3; ++k) CHECK(at::equal(slg_steps.latents[k], again_steps.latents[k]));  // deterministic
  Steps separate;
  sd3_pipeline(slg + "configs: {batch_passes: false}\n")->run(in, record(separate));
  for (size_t k = 0; k < 3; ++k) {
    INFO("step " << k << ": max |batched - separate| = "
                 << (slg_steps.latents[k] - separate.latents[k]).abs().max().item<double>());
    CHECK(at::allclose(slg_steps.latents[k], separate.latents[k], 1e-4, 1e-4));
  }
}

TEST_CASE("sd3: prompt_embeds given skip the text encoders", "[sd3]") {
  ValueMap in = text2image("tiny-sd3", 2, 2);
  in["guidance_scale"] = Value(1.0);
  in["output_type"] = Value("latent");
  PipelineState first = sd3_pipeline()->run(in);
  ValueMap given = in;
  given.erase("prompt");
  given["prompt_embeds"] = first.get("prompt_embeds");
  given["pooled_prompt_embeds"] = first.get("pooled_prompt_embeds");
  CHECK(at::equal(sd3_pipeline()->run(given).get("latents").tensor(), first.get("latents").tensor()));
  given.erase("pooled_prompt_embeds");
  CHECK_THROWS_WITH(sd3_pipeline()->run(given), Contains("pooled_prompt_embeds"));
}

TEST_CASE("sd3 num_images_per_prompt: copies of each prompt's embeddings, one latent each", "[sd3]") {
  ValueMap in = text2image("tiny-sd3", 8, 1);
  in["num_images_per_prompt"] = Value(int64_t{2});
  PipelineState s = sd3_pipeline()->run(in);
  at::Tensor pooled = s.get("pooled_prompt_embeds").tensor();
  REQUIRE(pooled.size(0) == 2);
  CHECK(at::equal(pooled[0], pooled[1]));
  at::Tensor images = s.get("images").images().pixels;
  REQUIRE(images.size(0) == 2);
  CHECK_FALSE(at::equal(images[0], images[1]));  // different noise per image
}

TEST_CASE("sd3: a run resumed from a checkpoint gives the same image", "[sd3][checkpoint]") {
  // The checkpoint holds the pipeline state, not the scheduler's internals: the blocks that use the scheduler set
  // a fresh one up again from the 4-value flow `scheduler_setup`. Image2image resumes right after set_timesteps,
  // so the noising (scale_noise at the begin index) and the loop both run on a restored scheduler.
  const fs::path dir = fs::temp_directory_path() / ("tessera_sd3_resume_" + std::to_string(std::random_device{}()));
  REQUIRE(fs::create_directories(dir));
  const std::string file = (dir / "state.safetensors").string();
  for (const bool img2img : {false, true}) {
    INFO("img2img " << img2img);
    ValueMap in = text2image("tiny-sd3", 17, 4);
    if (img2img) in["image"] = Value(gradient_image(64, 64));
    const std::string at = img2img ? "set_timesteps" : "prepare_latents";
    const at::Tensor whole = sd3_pipeline()->run(in).get("images").images().pixels;

    CheckpointObserver saver({{at, CheckpointAction::Save, file}});
    RunOptions save;
    save.observers.push_back(&saver);
    sd3_pipeline()->run(in, save);

    auto fresh = sd3_pipeline();  // new components: a scheduler that never saw set_timesteps
    CheckpointObserver loader({{at, CheckpointAction::Load, file}});
    RunOptions resume;
    resume.observers.push_back(&loader);
    resume.resume_after = loader.resume_after();
    resume.on_resume = loader.on_resume();
    int steps = 0;
    resume.step_callbacks.push_back([&](const StepInfo&) { return ++steps, true; });
    const at::Tensor resumed = fresh->run(in, resume).get("images").images().pixels;
    CHECK(steps == (img2img ? 3 : 4));  // image2image: int(4 - 4 * 0.6) = 1, three of four steps
    CHECK(at::equal(whole, resumed));
  }
  fs::remove_all(dir);
}

TEST_CASE("sd3 bad input: clear errors before any denoising", "[sd3]") {
  auto p = sd3_pipeline();
  ValueMap in = text2image("tiny-sd3", 1, 2);
  SECTION("height and width not multiples of VAE factor × patch size") {
    in["height"] = Value(int64_t{30});
    in["width"] = Value(int64_t{64});
    CHECK_THROWS_AS(p->run(in), InputError);
    CHECK_THROWS_WITH(p->run(in), Contains("multiples of 4") && Contains("30") && Contains("64"));
  }
  SECTION("max_sequence_length above the limit") {
    in["max_sequence_length"] = Value(int64_t{513});
    CHECK_THROWS_AS(p->run(in), InputError);
    CHECK_THROWS_WITH(p->run(in), Contains("max_sequence_length") && Contains("513"));
  }
  SECTION("strength 0 in image2image") {
    in["image"] = Value(gradient_image(64, 64));
    in["strength"] = Value(0.0);
    CHECK_THROWS_AS(p->run(in), InputError);
    CHECK_THROWS_WITH(p->run(in), Contains("strength"));
  }
  SECTION("latents of the wrong shape") {
    in["latents"] = Value(at::zeros({1, 16, 16, 16}));
    CHECK_THROWS_WITH(p->run(in), Contains("latents") && Contains("[1, 16, 32, 32]"));
  }
  SECTION("a scheduler that is not flow matching") {
    in["scheduler"] = Value("EulerDiscreteScheduler");
    CHECK_THROWS_WITH(p->run(in), Contains("FlowMatchEulerDiscreteScheduler") && Contains("EulerDiscreteScheduler"));
  }
  SECTION("a FLUX model under the SD3 recipe") {
    in["model"] = Value(kModels + "/tiny-flux");
    int steps_run = 0;
    RunOptions o;
    o.step_callbacks.push_back([&](const StepInfo&) { return ++steps_run, true; });
    CHECK_THROWS_AS(p->run(in, o), ModelLoadError);
    // The engine compares the recipe's classes with the folder's model_index.json before any block runs.
    CHECK_THROWS_WITH(p->run(in, o), Contains("FluxPipeline") && Contains("CLIPTextModelWithProjection") &&
                                         Contains("names CLIPTextModel for 'text_encoder'"));
    CHECK(steps_run == 0);
  }
}

TEST_CASE("every SD3 / SD3.5 pipeline case matches diffusers", "[parity][sd3]") {
  register_pipeline_case_runner();
  register_sd3_pipeline_case_runner();
  std::ostringstream out;
  ParityOptions options{kSource + "/tests/fixtures/parity/manifest_dit.json", "^sd3_", "", true};
  const int rc = run_parity(options, out);
  INFO(out.str());
  CHECK(rc == 0);
  // text2image with given and seeded latents, image2image, the modular pipeline with a CFG guider, SD3.5.
  CHECK(out.str().find("5 passed, 0 failed, 0 skipped") != std::string::npos);
}
