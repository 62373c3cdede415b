// ControlNet at parity with diffusers: the ControlNetModel residuals (plain and guess mode, SD and SDXL) and the
// UNet's noise prediction with them at step 0 of a pipeline (manifest_control.json).
#include <catch2/catch.hpp>

#include <sstream>

#include "tools/parity/parity.h"

using namespace tessera;

TEST_CASE("the ControlNet model and step-0 cases match diffusers", "[parity][controlnet]") {
  register_builtin_case_runners();
  std::ostringstream out;
  ParityOptions options{std::string(TESSERA_SOURCE_DIR) + "/tests/fixtures/parity/manifest_control.json",
                        "^controlnet_sdx?l?_(model_forward|step0_)", "", true};
  const int rc = run_parity(options, out);
  INFO(out.str());
  CHECK(rc == 0);
  // model_forward SD and SDXL; step 0 of SD txt2img, SD guess mode and SDXL txt2img.
  CHECK(out.str().find("5 passed, 0 failed, 0 skipped") != std::string::npos);
}

TEST_CASE("the ControlNet pipelines match diffusers", "[parity][controlnet]") {
  register_builtin_case_runners();
  std::ostringstream out;
  // Through recipes/sd and recipes/sdxl with control_image and controlnet set, as `tessera run` would.
  ParityOptions options{std::string(TESSERA_SOURCE_DIR) + "/tests/fixtures/parity/manifest_control.json",
                        "^controlnet_sdx?l?_(txt2img|img2img|inpaint|modular)", "", true};
  const int rc = run_parity(options, out);
  INFO(out.str());
  CHECK(rc == 0);
  // SD: txt2img, window, guess mode, resized control image, img2img, 4-channel inpainting; SDXL: txt2img and
  // guess mode, standard and modular.
  CHECK(out.str().find("10 passed, 0 failed, 0 skipped") != std::string::npos);
}
