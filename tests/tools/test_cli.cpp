// The tessera CLI end to end: every bad-input fixture fails with its message and exit code, every
// shipped recipe validates, runs write PNGs atomically, checkpoints round-trip, plugins load from recipes.
#include <catch2/catch.hpp>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "tessera/image_io.h"
#include "engine/safetensors.h"
#include "tests/support/cli.h"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;

using namespace tessera::test;

namespace {
std::string demo() { return src("recipes/demo/noise_to_image.yaml"); }

}  // namespace

TEST_CASE("every bad-input fixture fails validation with its message and exit code", "[cli]") {
  int cases = 0;
  for (const auto& entry : fs::directory_iterator(src("tests/fixtures/recipes/bad"))) {
    if (entry.path().extension() != ".yaml") continue;
    ++cases;
    std::ifstream in(entry.path());
    std::string line;
    int expect_exit = -1;
    std::vector<std::string> messages;
    while (std::getline(in, line) && line.rfind("# expect", 0) == 0) {
      if (line.rfind("# expect-exit: ", 0) == 0) expect_exit = std::stoi(line.substr(15));
      if (line.rfind("# expect-message: ", 0) == 0) messages.push_back(line.substr(18));
    }
    INFO("fixture " << entry.path().filename().string());
    REQUIRE(expect_exit > 0);
    REQUIRE_FALSE(messages.empty());
    auto r = cli("validate " + entry.path().string());
    INFO(r.output);
    CHECK(r.code == expect_exit);
    for (const auto& m : messages) CHECK_THAT(r.output, Contains(m));
    CHECK_THAT(r.output, !Contains("internal error"));
  }
  CHECK(cases >= 15);
}

TEST_CASE("every shipped recipe and good fixture validates", "[cli]") {
  int n = 0;
  for (const auto& dir : {src("recipes"), src("tests/fixtures/recipes/good")})
    for (const auto& entry : fs::recursive_directory_iterator(dir)) {
      if (entry.path().extension() != ".yaml") continue;
      ++n;
      auto r = cli("validate " + entry.path().string());
      INFO(r.output);
      CHECK(r.code == 0);
      CHECK_THAT(r.output, Contains("OK "));
    }
  CHECK(n >= 2);
}

TEST_CASE("run writes a PNG with the recipe and inputs embedded; same seed, same bytes", "[cli]") {
  TempDir dir;
  auto r = cli("run " + demo() + " --set seed=7 --set num_inference_steps=4 --out " + (dir / "a.png"));
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.output, Contains("wrote " + (dir / "a.png")));
  auto image = tessera::read_image(dir / "a.png");
  CHECK(image.pixels.sizes() == at::IntArrayRef({1, 3, 64, 64}));
  auto chunks = tessera::read_png_text(dir / "a.png");
  std::map<std::string, std::string> text(chunks.begin(), chunks.end());
  CHECK_THAT(text["tessera.recipe"], Contains("common.prepare_noise"));
  CHECK(nlohmann::json::parse(text["tessera.inputs"])["seed"] == 7);
  CHECK(text["tessera.seed"] == "7");
  REQUIRE(cli("-q run " + demo() + " --set seed=7 --set num_inference_steps=4 --out " + (dir / "b.png")).code == 0);
  REQUIRE(cli("-q run " + demo() + " --set seed=8 --set num_inference_steps=4 --out " + (dir / "c.png")).code == 0);
  CHECK(read_bytes(dir / "a.png") == read_bytes(dir / "b.png"));
  CHECK(read_bytes(dir / "a.png") != read_bytes(dir / "c.png"));
  // Quiet runs print nothing; no temp files are left behind.
  CHECK(cli("-q run " + demo() + " --out " + (dir / "d.png")).output.empty());
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir.path)) files += e.path().extension() == ".png";
  CHECK(files == 4);
  CHECK(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator()) == 4);
}

TEST_CASE("run shows progress on stderr: a line per top-level block, at most ten per loop", "[cli]") {
  TempDir dir;
  const std::string sd = src("recipes/sd/auto.yaml");
  auto r = cli("run " + sd + " --set prompt=x --set num_inference_steps=20 --out " + (dir / "p.png"));
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.output, Contains("text_encoder: ") && Contains("decode: ") && Contains("denoise: "));
  CHECK_THAT(r.output, Contains("denoise 20/20 |########################| "));
  CHECK_THAT(r.output, Contains(" it/s, ETA "));
  size_t lines = 0;
  for (size_t at = r.output.find("denoise "); at != std::string::npos; at = r.output.find("denoise ", at + 1)) ++lines;
  CHECK(lines == 10);  // 2/20, 4/20, … 20/20 (not a TTY: plain lines)
  CHECK_THAT(r.output, !Contains("ip_adapter: "));  // an auto block that selected nothing gets no line
}

TEST_CASE("Ctrl-C cancels a run at the next block or step: exit code 10, no output file", "[cli]") {
  TempDir dir;
  // A background job of a non-interactive shell starts with SIGINT ignored; tessera installs its own handler.
  const std::string cmd = std::string(TESSERA_CLI) + " run " + src("recipes/sd/auto.yaml") +
                          " --set prompt=x --set num_inference_steps=999 --out " + (dir / "i.png") +
                          " > " + (dir / "log.txt") + " 2>&1 & pid=$!; sleep 1; kill -INT $pid; wait $pid; echo rc=$?";
  FILE* pipe = popen(cmd.c_str(), "r");
  REQUIRE(pipe);
  char buf[64] = {0};
  const size_t n = std::fread(buf, 1, sizeof buf - 1, pipe);
  pclose(pipe);
  const std::string rc(buf, n);
  const std::string log = read_bytes(dir / "log.txt");
  INFO(log);
  CHECK_THAT(rc, Contains("rc=10"));
  CHECK_THAT(log, Contains("interrupted (SIGINT)") && Contains("no output was written"));
  CHECK_FALSE(fs::exists(dir / "i.png"));
  CHECK(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator()) == 1);  // only log.txt
}

TEST_CASE("run rejects bad input with the right exit code and no output file", "[cli]") {
  TempDir dir;
  std::string out = " --out " + (dir / "x.png");
  struct Case {
    std::string args;
    int code;
    std::string message;
  };
  std::vector<Case> cases = {
      {"--set seed=abc", 5, "'seed' expects int but got 'abc'"},
      {"--set sed=1", 5, "did you mean 'seed'?"},
      {"--set seed", 2, "--set expects name=value"},
      {"--set num_inference_steps=0", 5, "num_inference_steps"},
      {"--workflow seedless", 4, "unknown workflow 'seedless'"},
      {"--checkpoint decode", 2, "NAME:save|stop|load"},
      {"--checkpoint decod:save", 8, "did you mean 'decode'?"},
      {"--checkpoint set_steps:load=" + (dir / "none.safetensors"), 8, "none.safetensors"},
      {"--plugin " + (dir / "libnothing.so"), 6, "does not exist"},
      {"--frobnicate", 2, "frobnicate"},
  };
  for (const auto& c : cases) {
    auto r = cli("run " + demo() + " " + c.args + out);
    INFO(c.args << "\n" << r.output);
    CHECK(r.code == c.code);
    CHECK_THAT(r.output, Contains(c.message));
    CHECK_FALSE(fs::exists(dir / "x.png"));
  }
  auto r = cli("run " + demo() + " --out " + (dir / "no/such/dir/x.png"));
  CHECK(r.code == 11);
  CHECK_THAT(r.output, Contains("does not exist"));
  auto unsatisfied = cli("run " + src("tests/fixtures/recipes/bad/unsatisfied_input.yaml"));
  CHECK(unsatisfied.code == 4);
  auto missing = cli("run " + src("tests/fixtures/recipes/good/required_seed.yaml") + out);
  CHECK(missing.code == 5);
  CHECK_THAT(missing.output, Contains("missing required input seed") && Contains("--set seed=…"));
  CHECK_FALSE(fs::exists(dir / "x.png"));
  CHECK(cli("-q run " + src("tests/fixtures/recipes/good/required_seed.yaml") + " --set seed=1" + out).code == 0);
}

TEST_CASE("checkpoints: save, stop, and load resume with identical results", "[cli]") {
  TempDir dir;
  std::string base = "-q run " + demo() + " --set seed=3 --set num_inference_steps=5";
  REQUIRE(cli(base + " --checkpoint set_steps:save=" + (dir / "after_steps.safetensors") + " --out " +
                  (dir / "full.png")).code == 0);
  REQUIRE(fs::exists(dir / "after_steps.safetensors"));
  tessera::SafetensorsFile saved(dir / "after_steps.safetensors");
  CHECK(saved.has("latents"));
  CHECK(saved.has("timesteps"));
  // Loading resumes after set_steps: prepare never runs, so the seed given now does not matter.
  auto r = cli("-q run " + demo() + " --set seed=999 --set num_inference_steps=5 --checkpoint set_steps:load=" +
                   (dir / "after_steps.safetensors") + " --out " + (dir / "resumed.png"));
  INFO(r.output);
  REQUIRE(r.code == 0);
  // Same pixels (the embedded inputs differ: they record the seed given to each run).
  CHECK(at::equal(tessera::read_image(dir / "full.png").pixels, tessera::read_image(dir / "resumed.png").pixels));
  auto stop = cli("run " + demo() + " --checkpoint prepare:stop=" + (dir / "stop.safetensors") + " --out " +
                      (dir / "never.png"));
  CHECK(stop.code == 0);
  CHECK_THAT(stop.output, Contains("stopped after 'prepare'"));
  CHECK(fs::exists(dir / "stop.safetensors"));
  CHECK_FALSE(fs::exists(dir / "never.png"));
  std::ofstream(dir / "junk.safetensors") << "not a checkpoint";
  auto bad = cli(base + " --checkpoint set_steps:load=" + (dir / "junk.safetensors"));
  CHECK(bad.code == 8);
  CHECK_THAT(bad.output, Contains("junk.safetensors"));
}

TEST_CASE("run --profile reports operators per leaf block; --attention picks the kernel", "[cli]") {
  TempDir dir;
  const std::string args = " --set prompt=\"a cat\" --set seed=3 --set num_inference_steps=2";
  auto run = cli("run " + src("recipes/sd/auto.yaml") + args + " --profile --profile-top 3 --out " + (dir / "p.png"));
  REQUIRE(run.code == 0);
  CHECK_THAT(run.output, Contains("operators (outermost ATen calls)") && Contains("aten::conv2d") &&
                             Contains("tessera::flash_attention"));
  CHECK(std::regex_search(run.output, std::regex(R"(\ndenoise\.denoiser\.unet: [0-9.]+ ms)")));  // a leaf block in the loop
  // The math kernel gives the same image (both are exact to float32 rounding); an unknown kernel is a usage error.
  REQUIRE(cli("-q --attention math run " + src("recipes/sd/auto.yaml") + args + " --out " + (dir / "m.png")).code == 0);
  const auto flash = tessera::read_image(dir / "p.png"), math = tessera::read_image(dir / "m.png");
  CHECK((flash.pixels - math.pixels).abs().max().item<float>() <= 1.5f / 255.0f);  // at most one 8-bit level
  auto bad = cli("--attention xformers run " + src("recipes/sd/auto.yaml"));
  CHECK(bad.code == 2);
  CHECK_THAT(bad.output, Contains("xformers"));
}

TEST_CASE("trace, plan, blocks and recipe doc", "[cli]") {
  TempDir dir;
  REQUIRE(cli("-q run " + demo() + " --set num_inference_steps=3 --trace " + (dir / "t.json") + " --out " +
                  (dir / "t.png")).code == 0);
  auto trace = nlohmann::json::parse(read_bytes(dir / "t.json"));
  int steps = 0;
  for (const auto& ev : trace["traceEvents"]) steps += ev["name"] == "denoise.step";
  CHECK(steps == 3);

  auto plan = cli("plan " + demo() + " --workflow default");
  CHECK(plan.code == 0);
  CHECK_THAT(plan.output, Contains("denoise.step  [common.diffuse_step]"));
  auto bad_wf = cli("plan " + demo() + " --workflow defualt");
  CHECK(bad_wf.code == 4);
  CHECK_THAT(bad_wf.output, Contains("did you mean 'default'?"));

  auto list = cli("blocks list");
  CHECK_THAT(list.output, Contains("common.prepare_noise") && Contains("common.to_image"));
  auto show = cli("blocks show common.prepare_noise");
  CHECK_THAT(show.output, Contains("## Inputs") && Contains("`seed` (int)") && Contains("## Outputs"));
  auto unknown = cli("blocks show common.prepare");
  CHECK(unknown.code == 4);
  CHECK_THAT(unknown.output, Contains("did you mean"));

  auto doc = cli("recipe doc " + demo());
  CHECK(doc.code == 0);
  CHECK_THAT(doc.output, Contains("## Inputs") && Contains("`num_inference_steps` (int), default `30`") &&
                             Contains("## Workflows") && Contains("`denoise.step`"));
  auto help = cli("--help");
  CHECK(help.code == 0);
  CHECK_THAT(help.output, Contains("Exit codes:") && Contains("4  validation"));
  CHECK_THAT(cli("--version").output, Contains("tessera 0."));
}

TEST_CASE("a plugin listed in a recipe loads and its block runs", "[cli][plugin]") {
  TempDir dir;
  std::ofstream(dir / "plugin.yaml") << "version: 1\nplugins: [" << TESSERA_SAMPLE_PLUGIN << "]\n"
                                     << "inputs: {seed: 5}\nblocks:\n"
                                     << "  - {name: prepare, block: common.prepare_noise}\n"
                                     << "  - {name: zero, block: sample.scale_latents, params: {factor: 0.0}}\n";
  auto v = cli("validate " + (dir / "plugin.yaml"));
  INFO(v.output);
  REQUIRE(v.code == 0);
  auto r = cli("-q run " + (dir / "plugin.yaml") + " --out " + (dir / "state.safetensors"));
  INFO(r.output);
  REQUIRE(r.code == 0);
  tessera::SafetensorsFile state(dir / "state.safetensors");
  auto latents = state.tensor("latents");
  CHECK(latents.numel() == 3 * 64 * 64);
  CHECK(latents.abs().max().item<float>() == 0.0f);
  auto blocks = cli("--plugin " + std::string(TESSERA_SAMPLE_PLUGIN) + " blocks list");
  CHECK_THAT(blocks.output, Contains("sample.scale_latents") && Contains(TESSERA_SAMPLE_PLUGIN));
}
