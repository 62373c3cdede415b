// The sd.* / sdxl.* blocks through the shipped recipes on the tiny models in tests/fixtures/parity/models:
// workflows, determinism, guider batching, and bad input. (Numerical parity with diffusers is checked case by
// case by the pipeline parity runner: tests/tools, `tessera parity`.)
#include <catch2/catch.hpp>

#include <filesystem>

#include <tessera/builtins.h>

#include "engine/checkpoint.h"
#include "tessera/pipeline.h"
#include "tessera/recipe.h"
#include "tessera/registry.h"

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
const std::string kTinySD = kSource + "/tests/fixtures/parity/models/tiny-sd";
const std::string kTinySDXL = kSource + "/tests/fixtures/parity/models/tiny-sdxl";

std::unique_ptr<Pipeline> sd_pipeline(const std::string& family = "sd", const std::string& extra_yaml = {}) {
  const std::string path = kSource + "/recipes/" + family + "/auto.yaml";
  if (extra_yaml.empty()) return Pipeline::from_recipe(load_recipe(path), reg());
  // A small recipe that extends the shipped one (named as if next to it, so relative paths resolve the same).
  const std::string name = kSource + "/recipes/" + family + "/test_extension.yaml";
  return Pipeline::from_recipe(parse_recipe("version: 1\nextends: auto.yaml\n" + extra_yaml, name), reg());
}

ValueMap text2image(int64_t seed, int64_t steps = 3) {
  return {{"prompt", Value("a photo of an astronaut")}, {"seed", Value(seed)}, {"num_inference_steps", Value(steps)}};
}

ImageBatch gradient_image(int64_t h, int64_t w) {
  at::Tensor y = at::linspace(0, 1, h).view({1, 1, h, 1}).expand({1, 1, h, w});
  at::Tensor x = at::linspace(0, 1, w).view({1, 1, 1, w}).expand({1, 1, h, w});
  return {at::cat({y, x, (x + y) / 2}, 1).contiguous()};  // [1, 3, h, w] in [0, 1]
}

ImageBatch center_mask(int64_t h, int64_t w) {
  at::Tensor m = at::zeros({1, 3, h, w});
  m.slice(2, h / 4, 3 * h / 4).slice(3, w / 4, 3 * w / 4).fill_(1.0);
  return {m};
}

}  // namespace

TEST_CASE("sd/auto.yaml and sdxl/auto.yaml validate and plan their workflows (ControlNet ones included)", "[sd]") {
  for (const std::string family : {"sd", "sdxl"}) {
    INFO(family);
    auto p = sd_pipeline(family);
    std::string problems;
    for (const auto& e : p->problems()) problems += std::string(e.what()) + "\n";
    CHECK(problems.empty());
    Plan t2i = p->plan("text2image"), i2i = p->plan("image2image"), inp = p->plan("inpainting");
    auto has = [](const Plan& pl, const std::string& path) {
      for (const auto& e : pl.blocks)
        if (e.path == path) return true;
      return false;
    };
    CHECK(has(t2i, "set_timesteps.text2image"));
    CHECK(has(t2i, "prepare_latents.text2image"));
    CHECK_FALSE(has(t2i, "denoise.inpaint_blend.blend"));
    CHECK(has(i2i, "set_timesteps.img2img"));
    CHECK(has(i2i, "prepare_latents.img2img.vae_encode"));
    CHECK(has(i2i, "prepare_latents.img2img.noise"));
    CHECK(has(inp, "prepare_latents.inpaint"));
    CHECK(has(inp, "denoise.inpaint_blend.blend"));
    CHECK(has(inp, "denoise.denoiser.unet"));
    CHECK_FALSE(has(t2i, "control_image.controlnet"));
    CHECK_FALSE(has(t2i, "denoise.denoiser.controlnet"));
    // A control image adds its preparation and swaps the loop's denoiser, in every workflow; a second one, the
    // two-ControlNet denoiser.
    for (const std::string wf : {"controlnet_text2image", "controlnet_image2image", "controlnet_inpainting"}) {
      INFO(wf);
      Plan cn = p->plan(wf);
      CHECK(has(cn, "control_image.controlnet"));
      CHECK(has(cn, "denoise.denoiser.controlnet"));
      CHECK_FALSE(has(cn, "denoise.denoiser.unet"));
      CHECK_FALSE(has(cn, "control_image_2.controlnet_2"));
    }
    CHECK(has(p->plan("controlnet_image2image"), "prepare_latents.img2img.vae_encode"));
    CHECK(has(p->plan("controlnet_inpainting"), "denoise.inpaint_blend.blend"));
    Plan two = p->plan_for_inputs({"prompt", "control_image", "control_image_2"});
    CHECK(has(two, "control_image.controlnet"));
    CHECK(has(two, "control_image_2.controlnet_2"));
    CHECK(has(two, "denoise.denoiser.controlnets_2"));
    CHECK_FALSE(has(two, "denoise.denoiser.controlnet"));
    CHECK_THAT(format_plan(inp), Contains("vae"));
  }
}

TEST_CASE("sd text2image: same seed, bit-identical image; another seed, another image", "[sd]") {
  auto p = sd_pipeline();
  auto run = [&](int64_t seed) { return p->run(text2image(seed)).get("images").images().pixels; };
  at::Tensor a = run(5), b = run(5), c = run(6);
  REQUIRE(a.sizes() == at::IntArrayRef({1, 3, 64, 64}));  // tiny-sd: sample_size 32 × VAE factor 2
  CHECK(at::equal(a, b));
  CHECK_FALSE(at::equal(a, c));
  CHECK(a.min().item<float>() >= 0.0f);
  CHECK(a.max().item<float>() <= 1.0f);
}

TEST_CASE("sd: the scheduler comes from the model folder unless --set scheduler names one", "[sd]") {
  auto p = sd_pipeline();
  ValueMap in = text2image(1, 2);
  in["output_type"] = Value("latent");
  at::Tensor ddim = p->run(in).get("latents").tensor();
  auto q = sd_pipeline();
  in["scheduler"] = Value("EulerDiscreteScheduler");
  at::Tensor euler = q->run(in).get("latents").tensor();
  CHECK_FALSE(at::allclose(ddim, euler));
  auto r = sd_pipeline();
  in["scheduler"] = Value("EulerDiscreteSchedular");
  CHECK_THROWS_WITH(r->run(in), Contains("unknown type 'EulerDiscreteSchedular'") && Contains("EulerDiscreteScheduler"));
}

TEST_CASE("sd: batched and separate guider passes agree; guidance_scale 1 needs no negative", "[sd]") {
  ValueMap in = text2image(11, 3);
  in["output_type"] = Value("latent");
  at::Tensor batched = sd_pipeline()->run(in).get("latents").tensor();
  at::Tensor separate = sd_pipeline("sd", "configs: {batch_passes: false}\n")->run(in).get("latents").tensor();
  INFO("max |batched - separate| = " << (batched - separate).abs().max().item<double>());
  CHECK(at::allclose(batched, separate, 1e-4, 1e-4));  // batch-2 vs batch-1 kernels: reassociation only
  in["guidance_scale"] = Value(1.0);
  PipelineState no_cfg = sd_pipeline()->run(in);
  CHECK_FALSE(no_cfg.has("negative_prompt_embeds"));
  CHECK_FALSE(at::allclose(no_cfg.get("latents").tensor(), batched, 1e-3, 1e-3));
}

TEST_CASE("sd image2image and inpainting run; inpainting keeps the unmasked area", "[sd]") {
  auto p = sd_pipeline();
  ValueMap in = text2image(3, 4);
  in["image"] = Value(gradient_image(64, 64));
  in["strength"] = Value(0.5);
  PipelineState i2i = p->run(in);
  CHECK(i2i.get("images").images().pixels.sizes() == at::IntArrayRef({1, 3, 64, 64}));
  CHECK(i2i.get("num_inference_steps").to_int() == 2);  // int(4 * 0.5) steps kept

  in["mask_image"] = Value(center_mask(64, 64));
  in["strength"] = Value(1.0);
  in["output_type"] = Value("latent");
  PipelineState inp = sd_pipeline()->run(in);
  // After the last step the unmasked latents are exactly the image's latents (mask blending).
  at::Tensor mask = inp.get("mask").tensor();  // [1, 1, 32, 32]
  at::Tensor keep = (1 - mask).expand({1, 4, 32, 32}).to(at::kBool);
  at::Tensor latents = inp.get("latents").tensor(), image_latents = inp.get("image_latents").tensor();
  CHECK(at::equal(latents.masked_select(keep), image_latents.masked_select(keep)));
  CHECK_FALSE(at::allclose(latents, image_latents));
}

TEST_CASE("sdxl text2image runs with two encoders and time ids", "[sd]") {
  PipelineState s = sd_pipeline("sdxl")->run(text2image(2, 2));
  CHECK(s.get("images").images().pixels.sizes() == at::IntArrayRef({1, 3, 64, 64}));
  CHECK(s.get("prompt_embeds").tensor().sizes() == at::IntArrayRef({1, 77, 64}));
  CHECK(s.get("pooled_prompt_embeds").tensor().sizes() == at::IntArrayRef({1, 32}));
  CHECK(at::equal(s.get("add_time_ids").tensor(), at::tensor({64.f, 64.f, 0.f, 0.f, 64.f, 64.f}).view({1, 6})));
  CHECK(s.get("negative_prompt_embeds").tensor().abs().sum().item<double>() == 0.0);  // force_zeros_for_empty_prompt
}

TEST_CASE("sd: bad input is a clear error before denoising", "[sd]") {
  auto p = sd_pipeline();
  ValueMap in = text2image(1, 2);
  SECTION("height not a multiple of the VAE factor") {
    in["height"] = Value(int64_t{63});
    in["width"] = Value(int64_t{64});  // (given alone, SD's rule replaces both by the default size)
    CHECK_THROWS_WITH(p->run(in), Contains("multiples of the VAE scale factor 2") && Contains("63"));
  }
  SECTION("strength 0 and above 1") {
    in["image"] = Value(gradient_image(64, 64));
    in["strength"] = Value(0.0);
    CHECK_THROWS_AS(p->run(in), InputError);
    in["strength"] = Value(1.5);
    CHECK_THROWS_WITH(p->run(in), Contains("strength must be in (0, 1]"));
  }
  SECTION("mask without image") {
    in["mask_image"] = Value(center_mask(64, 64));
    CHECK_THROWS_WITH(p->run(in), Contains("image"));
  }
  SECTION("a model folder without the UNet") {
    const fs::path broken = fs::temp_directory_path() / "tessera_sd_no_unet";
    fs::remove_all(broken);
    fs::create_directories(broken);
    for (const char* sub : {"scheduler", "text_encoder", "tokenizer", "vae"})
      fs::copy(kTinySD + "/" + sub, broken / sub, fs::copy_options::recursive);
    fs::copy_file(kTinySD + "/model_index.json", broken / "model_index.json");
    in["model"] = Value(broken.string());
    int steps_run = 0;
    RunOptions o;
    o.step_callbacks.push_back([&](const StepInfo&) { return ++steps_run, true; });
    CHECK_THROWS_WITH(p->run(in, o), Contains("component 'unet'") && Contains(broken.string()));
    CHECK_THROWS_AS(p->run(in, o), ModelLoadError);
    CHECK(steps_run == 0);
    fs::remove_all(broken);
  }
  SECTION("an SDXL model under the SD recipe") {
    in["model"] = Value(kTinySDXL);
    CHECK_THROWS_WITH(p->run(in), Contains("SDXL") || Contains("text_time") || Contains("cross_attention"));
  }
}

TEST_CASE("sd image2image resizes an image whose size is not a multiple of the VAE factor", "[sd]") {
  ValueMap in = text2image(4, 2);
  in["image"] = Value(gradient_image(65, 67));  // rounded down to 64 × 66 (VAE factor 2), as diffusers does
  in["strength"] = Value(1.0);
  PipelineState s = sd_pipeline()->run(in);
  CHECK(s.get("images").images().pixels.sizes() == at::IntArrayRef({1, 3, 64, 66}));
  in["height"] = Value(int64_t{32});  // an explicit size wins: the image is resized to it
  in["width"] = Value(int64_t{48});
  CHECK(sd_pipeline()->run(in).get("images").images().pixels.sizes() == at::IntArrayRef({1, 3, 32, 48}));
}

TEST_CASE("sd num_images_per_prompt: copies of each prompt's embeddings, one latent each", "[sd]") {
  ValueMap in = text2image(8, 2);
  in["prompt"] = Value(std::vector<std::string>{"a red cube", "a blue sphere"});
  in["num_images_per_prompt"] = Value(int64_t{2});
  PipelineState s = sd_pipeline()->run(in);
  at::Tensor pe = s.get("prompt_embeds").tensor();
  REQUIRE(pe.size(0) == 4);
  CHECK(at::equal(pe[0], pe[1]));  // prompt 0 twice, then prompt 1 twice
  CHECK(at::equal(pe[2], pe[3]));
  CHECK_FALSE(at::equal(pe[1], pe[2]));
  at::Tensor images = s.get("images").images().pixels;
  REQUIRE(images.size(0) == 4);
  CHECK_FALSE(at::equal(images[0], images[1]));  // different noise per image
}

TEST_CASE("sdxl image2image and inpainting run", "[sd]") {
  ValueMap in = text2image(9, 2);
  in["image"] = Value(gradient_image(64, 64));
  in["strength"] = Value(1.0);
  CHECK(sd_pipeline("sdxl")->run(in).get("images").images().pixels.sizes() == at::IntArrayRef({1, 3, 64, 64}));
  in["mask_image"] = Value(center_mask(64, 64));
  PipelineState s = sd_pipeline("sdxl")->run(in);
  CHECK(s.get("images").images().pixels.sizes() == at::IntArrayRef({1, 3, 64, 64}));
  CHECK(s.get("mask").tensor().sizes() == at::IntArrayRef({1, 1, 32, 32}));
}

TEST_CASE("release_components_after_last_use unloads each model after its last block", "[sd]") {
  auto p = sd_pipeline();
  std::vector<std::string> loaded_at_step;
  RunOptions o;
  o.release_components_after_last_use = true;
  o.step_callbacks.push_back([&](const StepInfo&) {
    loaded_at_step.clear();
    for (const char* c : {"tokenizer", "text_encoder", "unet", "vae"})
      if (p->components().is_loaded(c)) loaded_at_step.push_back(c);
    return true;
  });
  at::Tensor released = p->run(text2image(21, 2), o).get("images").images().pixels;
  // During denoising the text encoder is already gone; after the run nothing is left loaded.
  CHECK(loaded_at_step == std::vector<std::string>{"unet", "vae"});
  for (const char* c : {"tokenizer", "text_encoder", "unet", "vae"}) CHECK_FALSE(p->components().is_loaded(c));
  // Same result as a run that keeps everything loaded (which is the default).
  at::Tensor kept = p->run(text2image(21, 2)).get("images").images().pixels;
  CHECK(at::equal(released, kept));
  CHECK(p->components().is_loaded("text_encoder"));
}

TEST_CASE("sd: the vae_tiling config decodes a larger image tile by tile", "[sd]") {
  ValueMap in = text2image(13, 1);
  in["height"] = Value(int64_t{96});  // tiny-sd's VAE tiles are 64 pixels: 96 needs 2×2 tiles
  in["width"] = Value(int64_t{96});
  at::Tensor plain = sd_pipeline()->run(in).get("images").images().pixels;
  at::Tensor tiled = sd_pipeline("sd", "configs: {vae_tiling: true}\n")->run(in).get("images").images().pixels;
  REQUIRE(tiled.sizes() == plain.sizes());
  CHECK_FALSE(at::equal(tiled, plain));
}

TEST_CASE("sd: a run resumed from a checkpoint after prepare_latents gives the same image", "[sd][checkpoint]") {
  // The checkpoint holds the pipeline state, not the scheduler's internals: the loop's blocks set the fresh
  // scheduler up again from `scheduler_setup`. Image2image checks that the begin index is restored too.
  const fs::path file = fs::temp_directory_path() / "tessera_sd_resume.safetensors";
  for (const bool img2img : {false, true}) {
    INFO("img2img " << img2img);
    ValueMap in = text2image(17, 4);
    if (img2img) {
      in["image"] = Value(gradient_image(64, 64));
      in["strength"] = Value(0.75);
      in["scheduler"] = Value("EulerDiscreteScheduler");
    }
    const at::Tensor whole = sd_pipeline()->run(in).get("images").images().pixels;

    CheckpointObserver saver({{"prepare_latents", CheckpointAction::Save, file.string()}});
    RunOptions save;
    save.observers.push_back(&saver);
    sd_pipeline()->run(in, save);

    auto fresh = sd_pipeline();  // new components: a scheduler that never saw set_timesteps
    CheckpointObserver loader({{"prepare_latents", CheckpointAction::Load, file.string()}});
    RunOptions resume;
    resume.observers.push_back(&loader);
    resume.resume_after = loader.resume_after();
    resume.on_resume = loader.on_resume();
    int steps = 0;
    resume.step_callbacks.push_back([&](const StepInfo&) { return ++steps, true; });
    const at::Tensor resumed = fresh->run(in, resume).get("images").images().pixels;
    CHECK(steps == (img2img ? 3 : 4));
    CHECK(at::equal(whole, resumed));
  }
  fs::remove(file);
}

TEST_CASE("sd: guidance_rescale applies for one run, then the guider's configured value is back", "[sd]") {
  auto p = sd_pipeline();
  ValueMap in = text2image(19, 2);
  in["output_type"] = Value("latent");
  const at::Tensor plain = p->run(in).get("latents").tensor();
  in["guidance_rescale"] = Value(0.7);
  const at::Tensor rescaled = p->run(in).get("latents").tensor();
  in.erase("guidance_rescale");
  const at::Tensor again = p->run(in).get("latents").tensor();
  CHECK_FALSE(at::allclose(plain, rescaled, 1e-3, 1e-3));
  CHECK(at::equal(plain, again));
}

TEST_CASE("sd: guidance_scale <= 1 means no classifier-free guidance, as in diffusers' pipelines", "[sd]") {
  ValueMap in = text2image(23, 2);
  in["output_type"] = Value("latent");
  in["guidance_scale"] = Value(1.0);
  const at::Tensor one = sd_pipeline()->run(in).get("latents").tensor();
  in["guidance_scale"] = Value(0.5);
  PipelineState half = sd_pipeline()->run(in);
  CHECK_FALSE(half.has("negative_prompt_embeds"));
  CHECK(at::equal(one, half.get("latents").tensor()));
}

TEST_CASE("sd/sdxl: workflow defaults follow diffusers' pipelines", "[sd]") {
  ValueMap in = text2image(29, 10);
  in["output_type"] = Value("latent");
  in["image"] = Value(gradient_image(48, 48));
  // image2image: strength 0.8 (SD) / 0.3 (SDXL) → 8 / 3 of 10 steps; the image keeps its own size.
  PipelineState i2i = sd_pipeline()->run(in);
  CHECK(i2i.get("num_inference_steps").to_int() == 8);
  CHECK(i2i.get("latents").tensor().sizes() == at::IntArrayRef({1, 4, 24, 24}));
  CHECK(sd_pipeline("sdxl")->run(in).get("num_inference_steps").to_int() == 3);
  // inpainting: strength 1.0 (SD) / 0.9999 (SDXL); the size defaults to the UNet's (64), not the image's (48).
  in["mask_image"] = Value(center_mask(48, 48));
  PipelineState inp = sd_pipeline()->run(in);
  CHECK(inp.get("num_inference_steps").to_int() == 10);
  CHECK(inp.get("latents").tensor().sizes() == at::IntArrayRef({1, 4, 32, 32}));
  CHECK(sd_pipeline("sdxl")->run(in).get("num_inference_steps").to_int() == 9);  // int(10 * 0.9999)
  // text2image with only a width: SD replaces both by the default, SDXL keeps the width.
  ValueMap t2i = text2image(29, 1);
  t2i["output_type"] = Value("latent");
  t2i["width"] = Value(int64_t{32});
  CHECK(sd_pipeline()->run(t2i).get("latents").tensor().sizes() == at::IntArrayRef({1, 4, 32, 32}));
  CHECK(sd_pipeline("sdxl")->run(t2i).get("latents").tensor().sizes() == at::IntArrayRef({1, 4, 32, 16}));
}
