// Every guider_* golden case (diffusers 0.40.0 outputs, ../shared/parity/README.md): for each step i,
// set_state(i, T, timesteps[i]); prepare_inputs; forward(pred_cond[i], pred_uncond[i][, pred_cond_skip[i]]).pred
// must equal pred[i] within the case's tolerance.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/safetensors.h"
#include "guiders/register.h"
#include "tools/parity/guider_cases.h"
#include "tests/guiders/guider_test_utils.h"

using namespace tessera;

namespace {

std::string run_guider_case(const nlohmann::json& c, const std::string& dir) {
  SafetensorsFile file(dir + "/" + c["file"].get<std::string>());
  const auto& params = c["params"];
  GuiderPtr guider = make_guider(params["guider_class"].get<std::string>(), params["init_kwargs"]);
  const int64_t T = params["num_inference_steps"].get<int64_t>();
  at::Tensor pred_cond = file.tensor("pred_cond"), pred_uncond = file.tensor("pred_uncond");
  at::Tensor timesteps = file.tensor("timesteps"), expected = file.tensor("pred");
  at::Tensor skip = file.has("pred_cond_skip") ? file.tensor("pred_cond_skip") : at::Tensor();
  const auto& tol = c["tolerance"];
  const double atol = tol.value("exact", false) ? 0.0 : tol["atol"].get<double>();
  const double rtol = tol.value("exact", false) ? 0.0 : tol["rtol"].get<double>();
  std::ostringstream problems;
  for (int64_t i = 0; i < T; ++i) {
    guider->set_state(i, T, timesteps[i]);
    guider->prepare_inputs({});
    std::map<std::string, at::Tensor> preds{{"pred_cond", pred_cond[i]}, {"pred_uncond", pred_uncond[i]}};
    if (skip.defined()) preds["pred_cond_skip"] = skip[i];
    at::Tensor got = guider->forward(preds).pred;
    std::string why = compare_tensors(got, expected[i], atol, rtol);
    if (!why.empty()) problems << "  step " << i << ": " << why << "\n";
  }
  return problems.str();
}

}  // namespace

TEST_CASE("every guider golden case matches diffusers", "[parity][guiders]") {
  const std::string dir = parity_dir();
  nlohmann::json manifest = read_parity_manifest(dir);
  int ran = 0;
  std::ostringstream failures;
  for (const auto& c : manifest["cases"]) {
    if (c["kind"] != "guider") continue;
    ++ran;
    std::string problems;
    try {
      problems = run_guider_case(c, dir);
    } catch (const std::exception& e) {
      problems = std::string("  threw: ") + e.what() + "\n";
    }
    if (!problems.empty()) failures << c["name"].get<std::string>() << ":\n" << problems;
  }
  INFO(failures.str());
  CHECK(ran >= 11);
  CHECK(failures.str().empty());
}

TEST_CASE("the parity runner replays the guider cases", "[parity][guiders]") {
  register_guider_case_runner();
  std::ostringstream out;
  ParityOptions options{parity_dir() + "/manifest.json", "^guider_", "", false};
  const int rc = run_parity(options, out);
  INFO(out.str());
  CHECK(rc == 0);
  CHECK(out.str().find("11 passed, 0 failed, 0 skipped") != std::string::npos);
}
