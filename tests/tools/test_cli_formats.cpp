// The tessera CLI on the files users have: single-file checkpoints (with a config folder or a model_type) and
// LoRAs (--lora FILE[:WEIGHT]), and the bad inputs of issue 12, each with its exit code and no output file.
#include <catch2/catch.hpp>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <ATen/ATen.h>

#include "engine/safetensors.h"
#include "tests/support/cli.h"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;

using namespace tessera::test;

namespace {
// The final images of a run written with --out X.safetensors (the file's metadata records the inputs, which differ).
at::Tensor images(const std::string& path) { return tessera::SafetensorsFile(path).tensor("images").clone(); }

const std::string kSteps = " --set num_inference_steps=3 --set seed=7 --set prompt=\"a cat\"";
}  // namespace

TEST_CASE("run on single files: the same image as from the diffusers folder; plan says what was detected",
          "[cli][formats]") {
  TempDir dir;
  auto folder = cli("-q run " + src("recipes/sd/auto.yaml") + " --set model=" + models("tiny-sd") + kSteps +
                    " --out " + (dir / "folder.png"));
  REQUIRE(folder.code == 0);
  auto single = cli("-q run " + src("recipes/sd/auto.yaml") + " --set model=" + models("single_file/tiny-sd-v1.safetensors") +
                    " --set config=" + models("tiny-sd") + kSteps + " --out " + (dir / "single.png"));
  INFO(single.output);
  REQUIRE(single.code == 0);
  // The PNG embeds the inputs (the model path differs): compare the images of a run of each written as tensors.
  auto a = cli("-q run " + src("recipes/sd/auto.yaml") + " --set model=" + models("tiny-sd") + kSteps + " --out " +
               (dir / "a.safetensors"));
  auto b = cli("-q run " + src("recipes/sd/auto.yaml") + " --set model=" + models("single_file/tiny-sd-v1.safetensors") +
               " --set config=" + models("tiny-sd") + kSteps + " --out " + (dir / "b.safetensors"));
  REQUIRE(a.code == 0);
  REQUIRE(b.code == 0);
  CHECK(at::equal(images(dir / "a.safetensors"), images(dir / "b.safetensors")));

  auto plan = cli("plan " + src("recipes/sd/auto.yaml") + " --workflow text2image --set model=" +
                  models("single_file/tiny-sd2-v.safetensors") + " --set config=" + models("tiny-sd2"));
  INFO(plan.output);
  CHECK(plan.code == 0);
  CHECK_THAT(plan.output, Contains("single-file checkpoint") && Contains("family sd2-v") &&
                              Contains("cond_stage_model.model.") && Contains("tiny-sd2"));
  auto named = cli("plan " + src("recipes/sd/auto.yaml") + " --workflow text2image --set model=" +
                   models("single_file/tiny-sd2-v.safetensors") + " --set model_type=sd2");
  CHECK_THAT(named.output, Contains("family sd2 (named by model_type)") && Contains("defaults/sd2"));
}

TEST_CASE("run --lora: fused into UNet and text encoders, weight 0 is no LoRA, the SDXL command works",
          "[cli][formats]") {
  TempDir dir;
  const std::string lora = models("lora/tiny-sd_kohya_locon.safetensors");
  auto run = [&](const std::string& extra, const std::string& out) {
    return cli("-q run " + src("recipes/sd/auto.yaml") + kSteps + extra + " --out " + (dir / out));
  };
  REQUIRE(run("", "base.safetensors").code == 0);
  REQUIRE(run(" --lora " + lora + ":0", "zero.safetensors").code == 0);
  REQUIRE(run(" --lora " + lora + ":0.8", "lora.safetensors").code == 0);
  CHECK(at::equal(images(dir / "zero.safetensors"), images(dir / "base.safetensors")));
  CHECK_FALSE(at::equal(images(dir / "lora.safetensors"), images(dir / "base.safetensors")));

  auto sdxl = cli("-q run " + src("recipes/sdxl/auto.yaml") + " --set model=" +
                  models("single_file/tiny-sdxl-base.safetensors") + " --set config=" + models("tiny-sdxl") +
                  " --lora " + models("lora/tiny-sdxl_kohya_locon_fp16.safetensors") + ":0.8" + kSteps +
                  " --out " + (dir / "sdxl.png"));
  INFO(sdxl.output);
  CHECK(sdxl.code == 0);
  CHECK(fs::exists(dir / "sdxl.png"));
}

TEST_CASE("bad single files and LoRAs: clear errors, distinct exit codes, no output file", "[cli][formats]") {
  TempDir dir;
  {
    std::ofstream(dir / "truncated.safetensors", std::ios::binary) << read_bytes(models("single_file/tiny-sd-v1.safetensors")).substr(0, 5000);
    std::ofstream(dir / "not-safetensors.safetensors", std::ios::binary) << "this is not a model";
    std::ofstream(dir / "old.ckpt", std::ios::binary) << "\x80\x02}q\x00.";
  }
  const std::string sd = src("recipes/sd/auto.yaml") + kSteps + " ";
  check_failing_runs({
      {sd + "--set model=" + (dir / "truncated.safetensors"), 7, {"truncated.safetensors"}},
      {sd + "--set model=" + (dir / "not-safetensors.safetensors"), 7, {"not-safetensors.safetensors"}},
      {sd + "--set model=" + (dir / "old.ckpt"), 7, {"old.ckpt", "pickle", "safetensors"}},
      {sd + "--set model=" + models("lora/tiny-sd_peft.safetensors"), 7, {"a LoRA", "--lora"}},
      {sd + "--set model=" + models("single_file/tiny-sdxl-base.safetensors") + " --set config=" + models("tiny-sdxl"), 7,
       {"sdxl", "family"}},
      {sd + "--set model=" + models("single_file/tiny-sd-v1.safetensors") + " --set model_type=sd3", 5,
       {"model_type 'sd3'", "sd2-v"}},
      {sd + "--lora " + models("lora/tiny-sdxl_kohya_locon_fp16.safetensors"), 7, {"tiny-sdxl_kohya_locon_fp16"}},
      {sd + "--lora " + models("lora/tiny-sd_peft.safetensors") + ":strong", 2, {"'strong' is not a number"}},
      {sd + "--lora " + models("lora/tiny-sd_peft.safetensors") + " --lora " + models("lora/tiny-sd_peft.safetensors") + ":0.5",
       2, {"twice"}},
      {sd + "--lora " + (dir / "missing.safetensors"), 7, {"missing.safetensors"}},
  }, dir / "x.png");
}
