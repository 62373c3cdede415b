// The C API (include/tessera/tessera.h) on tiny-sd: results equal to the C++ engine's, errors as statuses with
// messages (never exceptions), inputs from text, files, RGB8 and float buffers, progress and cancel.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include <tessera/builtins.h>
#include <tessera/tessera.h>

#include "tessera/image_io.h"
#include "tessera/pipeline.h"
#include "tessera/plugin.h"
#include "tessera/recipe.h"
#include "tessera/registry.h"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {

const std::string kSource = TESSERA_SOURCE_DIR;
const std::string kRecipe = kSource + "/recipes/sd/auto.yaml";
const std::string kTinySD = kSource + "/tests/fixtures/parity/models/tiny-sd";

struct Handles {
  tessera_context* ctx = nullptr;
  tessera_pipeline* pipe = nullptr;
  Handles() {
    REQUIRE(tessera_context_create(&ctx) == TESSERA_OK);
    REQUIRE(tessera_pipeline_load(ctx, kRecipe.c_str(), &pipe) == TESSERA_OK);
    REQUIRE(tessera_set_string(pipe, "model", kTinySD.c_str()) == TESSERA_OK);
    REQUIRE(tessera_set_string(pipe, "prompt", "a red circle") == TESSERA_OK);
    REQUIRE(tessera_set_int(pipe, "num_inference_steps", 3) == TESSERA_OK);
    REQUIRE(tessera_set_int(pipe, "seed", 11) == TESSERA_OK);
  }
  ~Handles() {
    tessera_pipeline_free(pipe);
    tessera_context_free(ctx);
  }
};

struct Result {
  tessera_result* res = nullptr;
  ~Result() { tessera_result_free(res); }
};

std::vector<uint8_t> rgb8_of(tessera_result* res, int index, int* w, int* h) {
  const uint8_t* rgb = nullptr;
  REQUIRE(tessera_result_image_rgb8(res, index, &rgb, w, h) == TESSERA_OK);
  REQUIRE(rgb != nullptr);
  return std::vector<uint8_t>(rgb, rgb + static_cast<size_t>(*w) * *h * 3);
}

/// The same text2image through the C++ engine, quantised to RGB8.
std::vector<uint8_t> cxx_rgb8(const tessera::ValueMap& inputs) {
  tessera::Registry registry;
  tessera::register_builtins(registry);
  auto p = tessera::Pipeline::from_recipe(tessera::load_recipe(kRecipe), registry);
  at::Tensor rgb = tessera::image_to_rgb8(p->run(inputs).get("images").images().pixels[0]);
  return std::vector<uint8_t>(rgb.data_ptr<uint8_t>(), rgb.data_ptr<uint8_t>() + rgb.numel());
}

struct Events {
  int block_starts = 0, block_ends = 0, steps = 0;
  std::vector<std::string> starts;
  int cancel_at_step = -1;           // cancel after this 0-based step
  std::string cancel_at_block;       // cancel when this leaf block starts
  bool bad_order = false;
};

int on_progress(const tessera_progress* p, void* user) {
  auto* e = static_cast<Events*>(user);
  if (p->elapsed_s < 0) e->bad_order = true;
  switch (p->event) {
    case TESSERA_EVENT_BLOCK_START:
      ++e->block_starts;
      e->starts.push_back(p->path);
      if (p->step != -1 || p->total != -1) e->bad_order = true;
      return e->cancel_at_block == p->path ? 1 : 0;
    case TESSERA_EVENT_BLOCK_END: ++e->block_ends; return 0;
    case TESSERA_EVENT_STEP:
      if (p->step != e->steps || p->total != 3) e->bad_order = true;
      ++e->steps;
      return p->step == e->cancel_at_step ? 1 : 0;
  }
  e->bad_order = true;
  return 0;
}

}  // namespace

TEST_CASE("C API: version, ABI and status names", "[api]") {
  CHECK(std::string(tessera_version()) == tessera::engine_version_string());
  CHECK(tessera_abi_version() == TESSERA_ABI_VERSION);
  CHECK(std::string(tessera_status_name(TESSERA_ERR_INPUT)) == "input");
  CHECK(std::string(tessera_status_name(TESSERA_OK)) == "ok");
  CHECK(std::string(tessera_status_name(999)) == "unknown");
}

TEST_CASE("C API: tiny-sd text2image gives the C++ engine's pixels, as RGB8, a PNG and a tensor", "[api]") {
  Handles h;
  Result r;
  REQUIRE(tessera_run(h.pipe, nullptr, nullptr, &r.res) == TESSERA_OK);
  REQUIRE(tessera_result_image_count(r.res) == 1);
  int w = 0, ht = 0;
  std::vector<uint8_t> c_pixels = rgb8_of(r.res, 0, &w, &ht);
  CHECK(w == 64);
  CHECK(ht == 64);
  const std::vector<uint8_t> expected = cxx_rgb8({{"model", tessera::Value(kTinySD)},
                                                  {"prompt", tessera::Value(std::string("a red circle"))},
                                                  {"num_inference_steps", tessera::Value(int64_t{3})},
                                                  {"seed", tessera::Value(int64_t{11})}});
  CHECK(c_pixels == expected);

  int64_t seed = 0;
  REQUIRE(tessera_result_int(r.res, "seed", &seed) == TESSERA_OK);
  CHECK(seed == 11);

  const float* data = nullptr;
  const int64_t* shape = nullptr;
  int ndim = 0;
  REQUIRE(tessera_result_tensor_f32(r.res, "images", &data, &shape, &ndim) == TESSERA_OK);
  REQUIRE(ndim == 4);
  const std::vector<int64_t> expected_shape{1, 3, 64, 64};
  CHECK(std::vector<int64_t>(shape, shape + 4) == expected_shape);
  // The float image quantises to the RGB8 bytes: channel-first floats vs interleaved bytes.
  for (int64_t i : {int64_t{0}, int64_t{777}, int64_t{4095}}) {
    const int64_t y = i / 64, x = i % 64;
    for (int c = 0; c < 3; ++c) {
      const float f = data[c * 64 * 64 + y * 64 + x];
      CHECK(std::abs(f * 255.0f - c_pixels[static_cast<size_t>(i * 3 + c)]) <= 0.51f);
    }
  }

  const fs::path png = fs::temp_directory_path() / "tessera_c_api_test.png";
  fs::remove(png);
  REQUIRE(tessera_result_write_png(r.res, 0, png.c_str()) == TESSERA_OK);
  tessera::ImageBatch back = tessera::read_image(png.string());
  at::Tensor back_rgb = tessera::image_to_rgb8(back.pixels);
  CHECK(std::vector<uint8_t>(back_rgb.data_ptr<uint8_t>(), back_rgb.data_ptr<uint8_t>() + back_rgb.numel()) ==
        c_pixels);
  fs::remove(png);
}

TEST_CASE("C API: errors are statuses with messages that name what is wrong", "[api]") {
  tessera_context* ctx = nullptr;
  REQUIRE(tessera_context_create(&ctx) == TESSERA_OK);
  tessera_pipeline* pipe = nullptr;

  SECTION("a missing recipe file") {
    CHECK(tessera_pipeline_load(ctx, "/nonexistent/recipe.yaml", &pipe) == TESSERA_ERR_RECIPE);
    CHECK(pipe == nullptr);
    CHECK_THAT(tessera_last_error(), Contains("/nonexistent/recipe.yaml"));
  }
  SECTION("inputs: unknown names, wrong kinds, bad images and tensors") {
    REQUIRE(tessera_pipeline_load(ctx, kRecipe.c_str(), &pipe) == TESSERA_OK);
    CHECK(tessera_set_int(pipe, "num_inference_stepz", 3) == TESSERA_ERR_INPUT);
    CHECK_THAT(tessera_last_error(), Contains("num_inference_steps"));  // did you mean
    CHECK(tessera_set_string(pipe, "seed", "many") == TESSERA_ERR_INPUT);
    CHECK_THAT(tessera_last_error(), Contains("seed"));
    CHECK(tessera_set_string(pipe, "image", "/nonexistent/in.png") == TESSERA_ERR_INPUT);
    CHECK_THAT(tessera_last_error(), Contains("/nonexistent/in.png"));
    const uint8_t px[3] = {1, 2, 3};
    CHECK(tessera_set_image_rgb8(pipe, "image", px, 0, 1) == TESSERA_ERR_INPUT);
    CHECK_THAT(tessera_last_error(), Contains("0x1"));
    const float f[2] = {0, 0};
    const int64_t bad_shape[1] = {-2};
    CHECK(tessera_set_tensor_f32(pipe, "latents", f, bad_shape, 1) == TESSERA_ERR_USAGE);
    CHECK_THAT(tessera_last_error(), Contains("latents"));
    CHECK(tessera_set_float(pipe, "guidance_scale", 7.5) == TESSERA_OK);
    CHECK(tessera_set_bool(pipe, "guidance_scale", 1) == TESSERA_ERR_INPUT);
  }
  SECTION("a missing model folder fails the run, not the process; the result stays NULL") {
    REQUIRE(tessera_pipeline_load(ctx, kRecipe.c_str(), &pipe) == TESSERA_OK);
    REQUIRE(tessera_set_string(pipe, "model", "/nonexistent/model") == TESSERA_OK);
    REQUIRE(tessera_set_string(pipe, "prompt", "x") == TESSERA_OK);
    tessera_result* res = reinterpret_cast<tessera_result*>(&pipe);  // must be reset to NULL
    CHECK(tessera_run(pipe, nullptr, nullptr, &res) == TESSERA_ERR_MODEL_LOAD);
    CHECK(res == nullptr);
    CHECK_THAT(tessera_last_error(), Contains("/nonexistent/model"));
  }
  SECTION("NULL handles and bad indices") {
    CHECK(tessera_set_int(nullptr, "seed", 1) == TESSERA_ERR_INTERNAL);
    CHECK_THAT(tessera_last_error(), Contains("pipe is NULL"));
    CHECK(tessera_result_image_count(nullptr) == 0);
    Handles h;
    Result r;
    REQUIRE(tessera_run(h.pipe, nullptr, nullptr, &r.res) == TESSERA_OK);
    const uint8_t* rgb = nullptr;
    CHECK(tessera_result_image_rgb8(r.res, 1, &rgb, nullptr, nullptr) == TESSERA_ERR_USAGE);
    CHECK_THAT(tessera_last_error(), Contains("1 image"));
    const float* data = nullptr;
    CHECK(tessera_result_tensor_f32(r.res, "imagez", &data, nullptr, nullptr) == TESSERA_ERR_OUTPUT);
    CHECK_THAT(tessera_last_error(), Contains("images"));
    CHECK(tessera_result_write_png(r.res, 0, "/nonexistent/dir/out.png") == TESSERA_ERR_OUTPUT);
    CHECK_FALSE(fs::exists("/nonexistent/dir/out.png"));
  }
  tessera_pipeline_free(pipe);
  tessera_context_free(ctx);
}

TEST_CASE("C API: progress at every leaf block and loop step; cancel from the callback", "[api]") {
  Handles h;
  Events e;
  SECTION("a full run reports every block and step") {
    Result r;
    REQUIRE(tessera_run(h.pipe, on_progress, &e, &r.res) == TESSERA_OK);
    CHECK_FALSE(e.bad_order);
    CHECK(e.steps == 3);
    CHECK(e.block_starts == e.block_ends);
    CHECK(e.block_starts > 3 * 2);  // the text encoder, the loop body per step, the decoder
    CHECK(std::find(e.starts.begin(), e.starts.end(), "decode") != e.starts.end());
  }
  SECTION("cancel after step 1 of 3") {
    e.cancel_at_step = 1;
    tessera_result* res = nullptr;
    CHECK(tessera_run(h.pipe, on_progress, &e, &res) == TESSERA_ERR_CANCELLED);
    CHECK(res == nullptr);
    CHECK(e.steps == 2);
    CHECK(std::find(e.starts.begin(), e.starts.end(), "decode") == e.starts.end());
  }
  SECTION("cancel when the decoder starts (outside any loop)") {
    e.cancel_at_block = "decode";
    tessera_result* res = nullptr;
    CHECK(tessera_run(h.pipe, on_progress, &e, &res) == TESSERA_ERR_CANCELLED);
    CHECK(res == nullptr);
    CHECK(e.steps == 3);
    CHECK_THAT(tessera_last_error(), Contains("decode"));
  }
  SECTION("after a cancel the pipeline runs again") {
    e.cancel_at_step = 0;
    tessera_result* res = nullptr;
    REQUIRE(tessera_run(h.pipe, on_progress, &e, &res) == TESSERA_ERR_CANCELLED);
    Result r;
    CHECK(tessera_run(h.pipe, nullptr, nullptr, &r.res) == TESSERA_OK);
    CHECK(tessera_result_image_count(r.res) == 1);
  }
}

TEST_CASE("C API: an image input from a file, from RGB8 pixels and from text give the same run", "[api]") {
  // The reference image: a run's output written as a PNG.
  const fs::path png = fs::temp_directory_path() / "tessera_c_api_init.png";
  std::vector<uint8_t> init;
  int w = 0, ht = 0;
  {
    Handles h;
    Result r;
    REQUIRE(tessera_run(h.pipe, nullptr, nullptr, &r.res) == TESSERA_OK);
    init = rgb8_of(r.res, 0, &w, &ht);
    REQUIRE(tessera_result_write_png(r.res, 0, png.c_str()) == TESSERA_OK);
  }
  auto image2image = [&](int how) {
    Handles h;
    REQUIRE(tessera_set_float(h.pipe, "strength", 0.6) == TESSERA_OK);
    if (how == 0) REQUIRE(tessera_set_image_file(h.pipe, "image", png.c_str()) == TESSERA_OK);
    if (how == 1) REQUIRE(tessera_set_image_rgb8(h.pipe, "image", init.data(), w, ht) == TESSERA_OK);
    if (how == 2) REQUIRE(tessera_set_string(h.pipe, "image", png.c_str()) == TESSERA_OK);
    Result r;
    REQUIRE(tessera_run(h.pipe, nullptr, nullptr, &r.res) == TESSERA_OK);
    int w2 = 0, h2 = 0;
    return rgb8_of(r.res, 0, &w2, &h2);
  };
  const auto from_file = image2image(0);
  CHECK(from_file != init);  // image2image changed the picture
  CHECK(image2image(1) == from_file);
  CHECK(image2image(2) == from_file);
  fs::remove(png);
}

TEST_CASE("C API: a float tensor input (initial latents) is used as given", "[api]") {
  // Two runs with the same explicit latents and different seeds draw the same image (the seed only draws the
  // latents when none are given); different latents draw a different one.
  std::vector<float> latents(1 * 4 * 32 * 32);  // tiny-sd: 64² images, VAE factor 2
  for (size_t i = 0; i < latents.size(); ++i) latents[i] = std::sin(static_cast<float>(i) * 0.37f);
  const int64_t shape[4] = {1, 4, 32, 32};
  auto run = [&](int64_t seed, float scale) {
    Handles h;
    std::vector<float> l = latents;
    for (auto& v : l) v *= scale;
    REQUIRE(tessera_set_int(h.pipe, "seed", seed) == TESSERA_OK);
    REQUIRE(tessera_set_tensor_f32(h.pipe, "latents", l.data(), shape, 4) == TESSERA_OK);
    Result r;
    REQUIRE(tessera_run(h.pipe, nullptr, nullptr, &r.res) == TESSERA_OK);
    int w = 0, ht = 0;
    return rgb8_of(r.res, 0, &w, &ht);
  };
  const auto a = run(1, 1.0f);
  CHECK(run(2, 1.0f) == a);
  CHECK(run(1, 0.5f) != a);
}
