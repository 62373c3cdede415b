// IP-Adapter model pieces at parity with transformers / diffusers (manifest_control.json): CLIPImageProcessor's
// uint8 resize + crop (exact) and pixel_values, the CLIP image encoder's outputs, and the three image projections
// as diffusers loads them from the original-layout files.
#include <catch2/catch.hpp>

#include <sstream>

#include "tools/parity/parity.h"

using namespace tessera;

TEST_CASE("the IP-Adapter image processor, image encoder and image projection cases match diffusers",
          "[parity][ip_adapter]") {
  register_builtin_case_runners();
  std::ostringstream out;
  ParityOptions options{std::string(TESSERA_SOURCE_DIR) + "/tests/fixtures/parity/manifest_control.json",
                        "^ip_adapter_(clip_image_processor|image_encoder|.*image_proj)$", "", true};
  const int rc = run_parity(options, out);
  INFO(out.str());
  CHECK(rc == 0);
  // clip_image_processor, image_encoder, sd / plus_sd / sdxl image_proj.
  CHECK(out.str().find("5 passed, 0 failed, 0 skipped") != std::string::npos);
}
