// IP-Adapter model pieces at parity with transformers / diffusers (manifest_control.json): CLIPImageProcessor's
// uint8 resize + crop (exact) and pixel_values, the CLIP image encoder's outputs, and the three image projections
// as diffusers loads them from the original-layout files, and the SD / SDXL UNets with IP attention processors
// (scale 0.6 and 0); and the four text2image pipelines with an IP-Adapter.
#include <catch2/catch.hpp>

#include <sstream>

#include "tools/parity/parity.h"

using namespace tessera;

TEST_CASE("the IP-Adapter image processor, image encoder, image projection and UNet cases match diffusers",
          "[parity][ip_adapter]") {
  register_builtin_case_runners();
  std::ostringstream out;
  ParityOptions options{std::string(TESSERA_SOURCE_DIR) + "/tests/fixtures/parity/manifest_control.json",
                        "^ip_adapter_(clip_image_processor|image_encoder|.*image_proj|sd_unet|sdxl_unet)$", "", true};
  const int rc = run_parity(options, out);
  INFO(out.str());
  CHECK(rc == 0);
  // clip_image_processor, image_encoder, sd / plus_sd / sdxl image_proj, sd / sdxl unet.
  CHECK(out.str().find("7 passed, 0 failed, 0 skipped") != std::string::npos);
}

TEST_CASE("the IP-Adapter pipelines match diffusers (SD base and Plus, SDXL classic and modular)",
          "[parity][ip_adapter][pipeline]") {
  register_builtin_case_runners();
  std::ostringstream out;
  ParityOptions options{std::string(TESSERA_SOURCE_DIR) + "/tests/fixtures/parity/manifest_control.json",
                        "^ip_adapter_.*_txt2img_.*$", "", true};
  const int rc = run_parity(options, out);
  INFO(out.str());
  CHECK(rc == 0);
  // images, step latents, pixel_values, encoder features and tokens of sd / plus_sd / sdxl; sdxl_modular's images.
  CHECK(out.str().find("4 passed, 0 failed, 0 skipped") != std::string::npos);
}
