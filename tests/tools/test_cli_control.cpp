// The tessera CLI with a ControlNet (issue 13): the commands of the README on the tiny models, the ControlNet
// really steering the image (and a zero scale giving exactly the plain image), the plan's branches, and the bad
// inputs, each with its exit code and no output file.
#include <catch2/catch.hpp>

#include <filesystem>

#include <ATen/ATen.h>

#include "tessera/image_io.h"
#include "engine/safetensors.h"
#include "tests/support/cli.h"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using namespace tessera::test;

namespace {
const std::string kSteps = " --set num_inference_steps=3 --set seed=7 --set prompt=\"a house\"";

// An edge-map-like control image: a white rectangle outline on black, [1, 3, h, w].
std::string write_edges(const TempDir& dir, int64_t h, int64_t w) {
  at::Tensor img = at::zeros({1, 3, h, w});
  img.slice(2, h / 4, h / 4 + 2).slice(3, w / 4, 3 * w / 4).fill_(1.0);
  img.slice(2, 3 * h / 4 - 2, 3 * h / 4).slice(3, w / 4, 3 * w / 4).fill_(1.0);
  img.slice(2, h / 4, 3 * h / 4).slice(3, w / 4, w / 4 + 2).fill_(1.0);
  img.slice(2, h / 4, 3 * h / 4).slice(3, 3 * w / 4 - 2, 3 * w / 4).fill_(1.0);
  const std::string path = dir / "edges.png";
  tessera::write_png(path, img);
  return path;
}

at::Tensor images(const std::string& path) { return tessera::SafetensorsFile(path).tensor("images").clone(); }
}  // namespace

TEST_CASE("run with a ControlNet: the image follows the control image's size and changes with the scale",
          "[cli][controlnet]") {
  TempDir dir("tessera-cli-control");
  const std::string edges = write_edges(dir, 40, 56);
  const std::string sd = src("recipes/sd/auto.yaml") + " --set model=" + models("tiny-sd") + kSteps;
  const std::string cn = " --set control_image=" + edges + " --set controlnet=" + models("tiny-sd-controlnet");

  auto run = cli("-q run " + sd + cn + " --out " + (dir / "house.png"));
  INFO(run.output);
  REQUIRE(run.code == 0);
  // The output size is the control image's (diffusers: height, width = the processed control image's).
  CHECK(tessera::read_image(dir / "house.png").pixels.sizes() == at::IntArrayRef({1, 3, 40, 56}));

  auto steered = cli("-q run " + sd + cn + " --set controlnet_conditioning_scale=0.7 --out " + (dir / "a.safetensors"));
  auto zero = cli("-q run " + sd + cn + " --set controlnet_conditioning_scale=0 --out " + (dir / "b.safetensors"));
  auto plain = cli("-q run " + sd + " --set height=40 --set width=56 --out " + (dir / "c.safetensors"));
  REQUIRE(steered.code == 0);
  REQUIRE(zero.code == 0);
  REQUIRE(plain.code == 0);
  // Scale 0: zero residuals, exactly the plain image; 0.7 steers it away.
  CHECK(at::equal(images(dir / "b.safetensors"), images(dir / "c.safetensors")));
  CHECK((images(dir / "a.safetensors") - images(dir / "c.safetensors")).abs().max().item<float>() > 1e-3f);

  // Two ControlNets sum their residuals (MultiControlNetModel): the same ControlNet twice at 0.3 and 0.4 is one at
  // 0.7 (residuals are linear in the scale), up to float rounding.
  auto twice = cli("-q run " + sd + cn + " --set controlnet_conditioning_scale=0.3 --set control_image_2=" + edges +
                   " --set controlnet_2=" + models("tiny-sd-controlnet") +
                   " --set controlnet_conditioning_scale_2=0.4 --out " + (dir / "d.safetensors"));
  INFO(twice.output);
  REQUIRE(twice.code == 0);
  CHECK((images(dir / "d.safetensors") - images(dir / "a.safetensors")).abs().max().item<float>() < 1e-3f);

  auto sdxl = cli("-q run " + src("recipes/sdxl/auto.yaml") + " --set model=" + models("tiny-sdxl") + kSteps +
                  " --set control_image=" + edges + " --set controlnet=" + models("tiny-sdxl-controlnet") +
                  " --set guess_mode=true --out " + (dir / "sdxl.png"));
  INFO(sdxl.output);
  CHECK(sdxl.code == 0);
  CHECK(fs::exists(dir / "sdxl.png"));
}

TEST_CASE("plan shows the ControlNet branch only when a control image is given", "[cli][controlnet]") {
  for (const std::string family : {"sd", "sdxl"}) {
    INFO(family);
    auto with = cli("plan " + src("recipes/" + family + "/auto.yaml") +
                    " --workflow controlnet_text2image --set controlnet=" + models("tiny-sd-controlnet"));
    INFO(with.output);
    CHECK(with.code == 0);
    CHECK_THAT(with.output, Contains("sd.prepare_control_image"));
    CHECK_THAT(with.output, Contains("sd.loop_controlnet_denoiser"));
    auto without = cli("plan " + src("recipes/" + family + "/auto.yaml") + " --workflow text2image");
    CHECK(without.code == 0);
    CHECK_THAT(without.output, !Contains("controlnet"));
    CHECK_THAT(without.output, Contains("sd.loop_denoiser"));
  }
}

TEST_CASE("bad ControlNet inputs: clear errors, distinct exit codes, no output file", "[cli][controlnet]") {
  TempDir dir("tessera-cli-control");
  const std::string edges = write_edges(dir, 32, 48);
  const std::string sd = src("recipes/sd/auto.yaml") + " --set model=" + models("tiny-sd") + kSteps;
  const std::string image = " --set control_image=" + edges;
  check_failing_runs({
      // a control image and no ControlNet
      {sd + image, 5, {"controlnet", "--set controlnet="}},
      // an SDXL ControlNet on an SD model: both named
      {sd + image + " --set controlnet=" + models("tiny-sdxl-controlnet"), 5,
       {"tiny-sdxl-controlnet", "SDXL", "tiny-sd'"}},
      // an empty guidance window
      {sd + image + " --set controlnet=" + models("tiny-sd-controlnet") +
           " --set control_guidance_start=0.8 --set control_guidance_end=0.5",
       5, {"control_guidance_start", "0 <= start < end <= 1"}},
      // a ControlNet folder that is not one
      {sd + image + " --set controlnet=" + (dir / "nowhere"), 7, {"nowhere"}},
      // an unknown resampling filter, with a control image that needs resizing
      {sd + image + " --set controlnet=" + models("tiny-sd-controlnet") +
           " --set height=40 --set width=56 --set control_image_resample=sharpest",
       5, {"sharpest", "torch_nearest"}},
  }, dir / "x.png");
}
