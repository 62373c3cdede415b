// Golden parity of every scheduler against diffusers (tests/fixtures/parity, sched_* cases).
#include <catch2/catch.hpp>

#include <fstream>
#include <regex>
#include <sstream>

#include "schedulers/scheduler.h"
#include "tools/parity/parity.h"

using namespace tessera;

namespace {
const std::string kManifest = std::string(TESSERA_SOURCE_DIR) + "/tests/fixtures/parity/manifest.json";
}

TEST_CASE("every sched_* golden case passes", "[parity][schedulers]") {
  std::ostringstream out;
  ParityOptions o;
  o.manifest = kManifest;
  o.filter_regex = "^sched_";
  o.verbose = true;
  int rc = run_parity(o, out);
  INFO(out.str());
  CHECK(rc == 0);

  // Every scheduler case listed in the manifest must have PASSED (not been skipped).
  std::ifstream in(kManifest);
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json m = parse_json_lenient(ss.str(), kManifest);
  int expected = 0;
  for (const auto& c : m["cases"])
    if (c["name"].get<std::string>().rfind("sched_", 0) == 0) {
      ++expected;
      CHECK(out.str().find("PASS " + c["name"].get<std::string>() + " ") != std::string::npos);
    }
  CHECK(expected >= 22);
  CHECK(out.str().find(std::to_string(expected) + " passed, 0 failed, 0 skipped") != std::string::npos);
}

TEST_CASE("parity runner reports failures and skips without crashing", "[parity]") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("tessera_parity_test_" + std::to_string(::getpid()));
  fs::create_directories(dir / "cases");
  fs::copy_file(fs::path(TESSERA_SOURCE_DIR) / "tests/fixtures/parity/cases/sched_ddim_10.safetensors",
                dir / "cases/ddim.safetensors", fs::copy_options::overwrite_existing);
  // A manifest with: a good case, an unknown class, a missing tensor, a missing file, bad params, an unknown kind.
  std::ifstream in(kManifest);
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json full = parse_json_lenient(ss.str());
  nlohmann::json good;
  for (const auto& c : full["cases"])
    if (c["name"] == "sched_ddim_10") good = c;
  good["file"] = "cases/ddim.safetensors";
  nlohmann::json unknown = good, missing_tensor = good, missing_file = good, bad_params = good, other = good;
  unknown["name"] = "unknown_class";
  unknown["params"]["scheduler_class"] = "DDIMSchedular";
  missing_tensor["name"] = "missing_tensor";
  missing_tensor["expected"]["sigmas"] = {{"shape", {11}}, {"dtype", "float32"}};
  missing_file["name"] = "missing_file";
  missing_file["file"] = "cases/nope.safetensors";
  bad_params["name"] = "bad_params";
  bad_params["params"]["scheduler_config"]["beta_start"] = "small";
  other["name"] = "other_kind";
  other["kind"] = "pipeline";
  nlohmann::json m = {{"format_version", 1}, {"models_dir", "models"},
                      {"cases", {good, unknown, missing_tensor, missing_file, bad_params, other}}};
  std::ofstream(dir / "manifest.json") << m.dump(1);

  std::ostringstream out;
  ParityOptions o;
  o.manifest = (dir / "manifest.json").string();
  int rc = run_parity(o, out);
  const std::string s = out.str();
  INFO(s);
  CHECK(rc == 1);
  CHECK(s.find("PASS sched_ddim_10 ") != std::string::npos);
  CHECK(std::regex_search(s, std::regex("FAIL unknown_class .*unknown scheduler 'DDIMSchedular'.*DDIMScheduler")));
  CHECK(std::regex_search(s, std::regex("FAIL missing_tensor .*lacks tensor 'sigmas'")));
  CHECK(std::regex_search(s, std::regex("FAIL missing_file .*missing")));
  CHECK(std::regex_search(s, std::regex("FAIL bad_params .*beta_start")));
  CHECK(std::regex_search(s, std::regex("SKIP other_kind : no runner for kind 'pipeline'")));
  CHECK(s.find("1 passed, 4 failed, 1 skipped") != std::string::npos);

  o.filter_regex = "^sched_";
  std::ostringstream out2;
  CHECK(run_parity(o, out2) == 0);
  CHECK(out2.str().find("1 passed, 0 failed, 0 skipped") != std::string::npos);

  o.manifest = (dir / "absent.json").string();
  std::ostringstream out3;
  CHECK(run_parity(o, out3) == 2);
  fs::remove_all(dir);
}
