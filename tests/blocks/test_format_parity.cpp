// Single-file checkpoints and LoRAs at parity with diffusers: every case of manifest_formats.json (conversion of
// the LDM/SGM files tensor by tensor, fused-LoRA UNets and text encoders, and whole pipelines loaded from single
// files or with LoRAs fused, replayed through recipes/sd and recipes/sdxl).
#include <catch2/catch.hpp>

#include <sstream>

#include "tools/parity/parity.h"

using namespace tessera;

TEST_CASE("every single-file and LoRA case matches diffusers", "[parity][formats]") {
  register_builtin_case_runners();
  std::ostringstream out;
  ParityOptions options{std::string(TESSERA_SOURCE_DIR) + "/tests/fixtures/parity/manifest_formats.json", "", "",
                        true};
  const int rc = run_parity(options, out);
  INFO(out.str());
  CHECK(rc == 0);
  // 5 conversions (SD1, SDXL, SD2-v fp32/fp16/.ckpt), 4 single-file pipelines, 3 fused-LoRA components, 4 LoRA
  // pipelines (kohya at 1 and 0.5, two stacked, SDXL).
  CHECK(out.str().find("16 passed, 0 failed, 0 skipped") != std::string::npos);
}
