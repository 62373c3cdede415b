// The tessera CLI with an IP-Adapter (issue 13): the README command on the tiny models, the reference image really
// steering the picture (and scale 0 giving exactly the plain image), base and Plus adapters, SDXL, with a
// ControlNet, the plan's branch, and the bad inputs, each with its exit code and no output file.
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

// A reference image of another size than the output (the feature extractor resizes and crops it): a smooth
// colour gradient, [1, 3, 48, 40].
std::string write_reference(const TempDir& dir) {
  at::Tensor y = at::linspace(0, 1, 48).view({1, 1, 48, 1}).expand({1, 1, 48, 40});
  at::Tensor x = at::linspace(0, 1, 40).view({1, 1, 1, 40}).expand({1, 1, 48, 40});
  const at::Tensor img = at::cat({y, x, (1 - y) * x}, 1);
  const std::string path = dir / "reference.png";
  tessera::write_png(path, img);
  return path;
}

at::Tensor images(const std::string& path) { return tessera::SafetensorsFile(path).tensor("images").clone(); }
float max_diff(const std::string& a, const std::string& b) {
  return (images(a) - images(b)).abs().max().item<float>();
}
}  // namespace

TEST_CASE("run with an IP-Adapter: the reference image steers the picture, scale 0 is the plain one",
          "[cli][ip_adapter]") {
  TempDir dir("tessera-cli-ip");
  const std::string ref = write_reference(dir);
  const std::string sd = src("recipes/sd/auto.yaml") + " --set model=" + models("tiny-sd") + kSteps;
  const std::string ip = " --set ip_adapter_image=" + ref + " --set ip_adapter=" +
                         models("tiny-ip-adapter/ip-adapter_sd.safetensors");

  // The README command (PNG out); the image encoder is found beside the adapter file.
  auto run = cli("-q run " + sd + ip + " --set ip_adapter_scale=0.6 --out " + (dir / "house.png"));
  INFO(run.output);
  REQUIRE(run.code == 0);
  CHECK(tessera::read_image(dir / "house.png").pixels.sizes() == at::IntArrayRef({1, 3, 64, 64}));

  auto steered = cli("-q run " + sd + ip + " --set ip_adapter_scale=0.6 --out " + (dir / "a.safetensors"));
  auto zero = cli("-q run " + sd + ip + " --set ip_adapter_scale=0 --out " + (dir / "b.safetensors"));
  auto plain = cli("-q run " + sd + " --out " + (dir / "c.safetensors"));
  REQUIRE(steered.code == 0);
  REQUIRE(zero.code == 0);
  REQUIRE(plain.code == 0);
  CHECK(at::equal(images(dir / "b.safetensors"), images(dir / "c.safetensors")));  // the ip term is skipped
  CHECK(max_diff(dir / "a.safetensors", dir / "c.safetensors") > 1e-3f);

  // Plus (Resampler on the penultimate hidden states), with the encoder folder named explicitly (relative to the
  // adapter file, as diffusers' image_encoder_folder).
  auto plus = cli("-q run " + sd + " --set ip_adapter_image=" + ref + " --set ip_adapter=" +
                  models("tiny-ip-adapter/ip-adapter-plus_sd.safetensors") +
                  " --set ip_adapter_image_encoder=image_encoder --set ip_adapter_scale=0.6 --out " +
                  (dir / "d.safetensors"));
  INFO(plus.output);
  REQUIRE(plus.code == 0);
  CHECK(max_diff(dir / "d.safetensors", dir / "c.safetensors") > 1e-3f);
  CHECK(max_diff(dir / "d.safetensors", dir / "a.safetensors") > 1e-3f);

  // image2image with the reference (the workflow ip_adapter_image2image), two images per prompt: the tokens are
  // repeated to every row.
  auto img2img = cli("-q run " + sd + ip + " --set image=" + ref + " --set num_images_per_prompt=2 --out " +
                     (dir / "g.safetensors"));
  INFO(img2img.output);
  REQUIRE(img2img.code == 0);
  CHECK(images(dir / "g.safetensors").size(0) == 2);

  // With a ControlNet: both apply (the result differs from the ControlNet alone).
  const std::string cn = " --set control_image=" + ref + " --set controlnet=" + models("tiny-sd-controlnet");
  auto both = cli("-q run " + sd + ip + cn + " --set ip_adapter_scale=0.6 --out " + (dir / "e.safetensors"));
  auto cn_only = cli("-q run " + sd + cn + " --out " + (dir / "f.safetensors"));
  INFO(both.output);
  REQUIRE(both.code == 0);
  REQUIRE(cn_only.code == 0);
  CHECK(max_diff(dir / "e.safetensors", dir / "f.safetensors") > 1e-3f);

  // The SDXL command: the adapter as FOLDER:PATH (diffusers' repository + weight_name), scale 0.6.
  auto sdxl = cli("-q run " + src("recipes/sdxl/auto.yaml") + " --set model=" + models("tiny-sdxl") + kSteps +
                  " --set ip_adapter_image=" + ref + " --set ip_adapter=" + models("tiny-ip-adapter") +
                  ":ip-adapter_sdxl.safetensors --set ip_adapter_scale=0.6 --out " + (dir / "sdxl.png"));
  INFO(sdxl.output);
  CHECK(sdxl.code == 0);
  CHECK(fs::exists(dir / "sdxl.png"));
}

TEST_CASE("plan shows the IP-Adapter branch only when a reference image is given", "[cli][ip_adapter]") {
  for (const std::string family : {"sd", "sdxl"}) {
    INFO(family);
    auto with = cli("plan " + src("recipes/" + family + "/auto.yaml") + " --workflow ip_adapter_text2image");
    INFO(with.output);
    CHECK(with.code == 0);
    CHECK_THAT(with.output, Contains("sd.prepare_ip_adapter"));
    auto without = cli("plan " + src("recipes/" + family + "/auto.yaml") + " --workflow text2image");
    CHECK(without.code == 0);
    CHECK_THAT(without.output, !Contains("sd.prepare_ip_adapter"));
    CHECK_THAT(without.output, Contains("skipped: ip_adapter"));
    const std::string components = without.output.substr(without.output.find("components:"));
    CHECK_THAT(components, !Contains("ip_adapter"));  // not among the components the run loads
  }
}

TEST_CASE("bad IP-Adapter inputs: clear errors, distinct exit codes, no output file", "[cli][ip_adapter]") {
  TempDir dir("tessera-cli-ip");
  const std::string ref = write_reference(dir);
  // An adapter file without an image_encoder/ beside it.
  fs::create_directories(dir / "lonely");
  fs::copy_file(models("tiny-ip-adapter/ip-adapter_sd.safetensors"), dir / "lonely/ip-adapter_sd.safetensors");
  const std::string sd = src("recipes/sd/auto.yaml") + " --set model=" + models("tiny-sd") + kSteps;
  const std::string image = " --set ip_adapter_image=" + ref;
  check_failing_runs({
      // a reference image and no adapter
      {sd + image, 5, {"ip_adapter", "--set ip_adapter="}},
      // an SDXL adapter on an SD model: both named
      {sd + image + " --set ip_adapter=" + models("tiny-ip-adapter/ip-adapter_sdxl.safetensors"), 5,
       {"ip-adapter_sdxl.safetensors", "width 64", "tiny-sd'", "width 32"}},
      // FOLDER:PATH naming no file
      {sd + image + " --set ip_adapter=" + models("tiny-ip-adapter") + ":ip-adapter_sd14.safetensors", 7,
       {"ip-adapter_sd14.safetensors", "does not exist"}},
      // no image encoder beside the file
      {sd + image + " --set ip_adapter=" + (dir / "lonely/ip-adapter_sd.safetensors"), 7,
       {"image_encoder", "does not exist", "--set ip_adapter_image_encoder="}},
      // a file that is not an IP-Adapter (a UNet's weights)
      {sd + image + " --set ip_adapter=" + models("tiny-sd/unet/diffusion_pytorch_model.safetensors"), 7,
       {"diffusion_pytorch_model.safetensors", "not an IP-Adapter"}},
      // an image encoder folder that does not exist
      {sd + image + " --set ip_adapter=" + models("tiny-ip-adapter/ip-adapter_sd.safetensors") +
           " --set ip_adapter_image_encoder=" + (dir / "nowhere"),
       7, {"nowhere"}},
  }, dir / "x.png");
}
