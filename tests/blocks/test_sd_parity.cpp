// End-to-end parity with diffusers: every sd_* / sdxl_* pipeline case of the golden manifest, replayed through
// recipes/sd/auto.yaml and recipes/sdxl/auto.yaml by the parity runner's "pipeline" kind.
#include <catch2/catch.hpp>

#include <sstream>

#include "tools/parity/parity.h"
#include "tools/parity/pipeline_cases.h"

using namespace tessera;

TEST_CASE("every SD and SDXL pipeline case matches diffusers", "[parity][sd]") {
  register_pipeline_case_runner();
  std::ostringstream out;
  ParityOptions options{std::string(TESSERA_SOURCE_DIR) + "/tests/fixtures/parity/manifest.json", "^sdx?l?_", "",
                        true};
  const int rc = run_parity(options, out);
  INFO(out.str());
  CHECK(rc == 0);
  // 12 SD cases (text2image with DDIM, Euler, DPM++ 2M with and without CFG, seeded Euler-ancestral,
  // image2image, inpainting) and 3 SDXL cases (standard Euler and DDIM, modular with a CFG guider).
  CHECK(out.str().find("15 passed, 0 failed, 0 skipped") != std::string::npos);
}

TEST_CASE("the pipeline runner finds the recipes from the manifest's folder", "[parity][sd]") {
  const std::string dir = find_recipes_dir(std::string(TESSERA_SOURCE_DIR) + "/tests/fixtures/parity/models");
  CHECK(dir.size() > 8);
  CHECK(dir.substr(dir.size() - 8) == "/recipes");
}
