// The common.* blocks, run directly through the registry, and chained into the demo pipeline.
#include <ATen/CPUGeneratorImpl.h>
#include <yaml-cpp/yaml.h>

#include <catch2/catch.hpp>

#include "blocks/register.h"
#include "tessera/block.h"
#include "tessera/components.h"
#include "tessera/registry.h"

using namespace tessera;
using Catch::Matchers::Contains;

namespace {
const Registry& reg() {
  static const Registry r = [] {
    Registry x;
    register_builtin_blocks(x);
    return x;
  }();
  return r;
}

void run(const Block& b, PipelineState& s) {
  Components comps(reg(), nullptr);
  ExecContext ctx;
  ctx.components = &comps;
  b.execute(ctx, s, "x");
}

PipelineState run_block(const std::string& id, PipelineState s, const ValueMap& params = {}) {
  auto b = reg().create_block(id, params);
  run(*b, s);
  return s;
}

BlockPtr named(BlockPtr b, const std::string& name) {
  b->set_name(name);
  return b;
}

// Mean squared difference between horizontal and vertical neighbours: the high-frequency energy.
double high_frequency_energy(const at::Tensor& x) {
  at::Tensor dy = x.slice(2, 1) - x.slice(2, 0, -1);  // [B, C, H-1, W]
  at::Tensor dx = x.slice(3, 1) - x.slice(3, 0, -1);  // [B, C, H, W-1]
  return (dy.pow(2).mean() + dx.pow(2).mean()).item<double>();
}

const InputParam* find_param(const std::vector<InputParam>& v, const std::string& name) {
  for (const auto& p : v)
    if (p.name == name) return &p;
  return nullptr;
}
}  // namespace

TEST_CASE("register_builtin_blocks registers the common blocks with their params", "[blocks]") {
  for (const char* id : {"common.prepare_noise", "common.set_steps", "common.diffuse_step", "common.to_image"}) {
    INFO(id);
    const BlockTypeInfo* info = reg().find_block(id);
    REQUIRE(info);
    CHECK_FALSE(info->description.empty());
    CHECK(reg().create_block(id, {})->cached_spec().description == info->description);
  }
  const InputParam* channels = find_param(reg().find_block("common.prepare_noise")->params, "channels");
  REQUIRE(channels);
  CHECK(channels->default_value->to_int() == 3);
  const InputParam* rate = find_param(reg().find_block("common.diffuse_step")->params, "rate");
  REQUIRE(rate);
  CHECK(rate->default_value->to_float() == Approx(0.2));
  CHECK_THROWS_AS(reg().create_block("common.prepare_noise", {{"channels", Value(int64_t{0})}}), ValidationError);
  CHECK_THROWS_AS(reg().create_block("common.diffuse_step", {{"rate", Value(0.3)}}), ValidationError);
  CHECK_THROWS_AS(reg().create_block("common.set_steps", {{"rate", Value(0.1)}}), ValidationError);
}

TEST_CASE("prepare_noise draws what torch.randn draws for the same seed", "[blocks]") {
  // First 16 values of torch.randn((1, 4, 32, 32), generator=torch.Generator().manual_seed(403)), float32,
  // computed with torch 1.13 CPU: ../shared/parity case sd_txt2img_euler_a_10_seeded, random_draws[0].
  const float expected[16] = {-1.449488878250122f,  -0.6959275603294373f, -1.368201732635498f, -0.9845798015594482f,
                              -0.7511665225028992f, 0.0732010155916214f,  -0.3540799915790558f, 0.03666400536894798f,
                              0.4755340814590454f,  -1.8925271034240723f, -1.4447121620178223f, 0.9184633493423462f,
                              -0.311633437871933f,  1.3962421417236328f,  0.3498741686344147f,  0.40004029870033264f};
  PipelineState s;
  s.set("seed", Value(int64_t{403}));
  s.set("height", Value(int64_t{32}));
  s.set("width", Value(int64_t{32}));
  s = run_block("common.prepare_noise", s, {{"channels", Value(int64_t{4})}});
  const at::Tensor& latents = s.get("latents").tensor();
  REQUIRE(latents.sizes() == at::IntArrayRef({1, 4, 32, 32}));
  REQUIRE(latents.scalar_type() == at::kFloat);
  at::Tensor flat = latents.flatten();
  for (int k = 0; k < 16; ++k) {
    INFO("element " << k);
    CHECK(flat[k].item<float>() == expected[k]);  // bit-exact, not approximately
  }
}

TEST_CASE("prepare_noise: same seed, same noise; other seed, other noise", "[blocks]") {
  auto draw = [](int64_t seed) {
    PipelineState s;
    s.set("seed", Value(seed));
    s.set("batch_size", Value(int64_t{2}));
    s.set("height", Value(int64_t{5}));
    s.set("width", Value(int64_t{7}));
    return run_block("common.prepare_noise", s).get("latents").tensor();
  };
  at::Tensor a = draw(42), b = draw(42), c = draw(43);
  CHECK(a.sizes() == at::IntArrayRef({2, 3, 5, 7}));
  CHECK(at::equal(a, b));
  CHECK_FALSE(at::equal(a, c));
  // The block is exactly at::randn on an explicitly seeded CPU generator.
  auto gen = at::make_generator<at::CPUGeneratorImpl>(42);
  CHECK(at::equal(a, at::randn({2, 3, 5, 7}, gen, at::TensorOptions().dtype(at::kFloat))));
  // Negative seeds wrap as torch.Generator.manual_seed does.
  auto neg = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(int64_t{-5}));
  CHECK(at::equal(draw(-5), at::randn({2, 3, 5, 7}, neg, at::TensorOptions().dtype(at::kFloat))));
}

TEST_CASE("prepare_noise continues a given generator's stream", "[blocks]") {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
  PipelineState s;
  s.set("generator", Value(gen));
  s.set("height", Value(int64_t{4}));
  s.set("width", Value(int64_t{4}));
  at::Tensor first = run_block("common.prepare_noise", s).get("latents").tensor();
  at::Tensor second = run_block("common.prepare_noise", s).get("latents").tensor();
  auto ref = at::make_generator<at::CPUGeneratorImpl>(7);
  at::Tensor ref_first = at::randn({1, 3, 4, 4}, ref, at::TensorOptions().dtype(at::kFloat));
  at::Tensor ref_second = at::randn({1, 3, 4, 4}, ref, at::TensorOptions().dtype(at::kFloat));
  CHECK(at::equal(first, ref_first));
  CHECK(at::equal(second, ref_second));

  s.set("seed", Value(int64_t{1}));
  CHECK_THROWS_AS(run_block("common.prepare_noise", s), InputError);
}

TEST_CASE("prepare_noise without seed draws one and writes it back", "[blocks]") {
  PipelineState s = run_block("common.prepare_noise", PipelineState{});
  CHECK(s.get("latents").tensor().sizes() == at::IntArrayRef({1, 3, 64, 64}));
  REQUIRE(s.has("seed"));
  int64_t seed = s.get("seed").to_int();
  CHECK(seed >= 0);
  PipelineState again;
  again.set("seed", Value(seed));
  CHECK(at::equal(run_block("common.prepare_noise", again).get("latents").tensor(), s.get("latents").tensor()));
}

TEST_CASE("prepare_noise rejects non-positive and huge sizes", "[blocks]") {
  for (const char* name : {"height", "width", "batch_size"}) {
    INFO(name);
    PipelineState s;
    s.set("seed", Value(int64_t{0}));
    s.set(name, Value(int64_t{0}));
    CHECK_THROWS_WITH(run_block("common.prepare_noise", s), Contains(name) && Contains("positive"));
  }
  PipelineState s;
  s.set("height", Value(int64_t{1} << 20));
  s.set("width", Value(int64_t{1} << 20));
  CHECK_THROWS_AS(run_block("common.prepare_noise", s), InputError);
}

TEST_CASE("set_steps spaces n timesteps from 1 down to 1/n", "[blocks]") {
  PipelineState s;
  s.set("num_inference_steps", Value(int64_t{4}));
  s = run_block("common.set_steps", s);
  at::Tensor t = s.get("timesteps").tensor();
  CHECK(t.scalar_type() == at::kFloat);
  CHECK(at::allclose(t, at::tensor({1.0f, 0.75f, 0.5f, 0.25f})));
  CHECK(s.get("num_inference_steps").to_int() == 4);

  PipelineState d = run_block("common.set_steps", PipelineState{});
  CHECK(d.get("timesteps").tensor().sizes() == at::IntArrayRef({20}));
  CHECK(d.get("num_inference_steps").to_int() == 20);

  for (int64_t bad : {0, -3}) {
    PipelineState b;
    b.set("num_inference_steps", Value(bad));
    CHECK_THROWS_AS(run_block("common.set_steps", b), InputError);
  }
}

TEST_CASE("diffuse_step is one explicit heat-equation step", "[blocks]") {
  auto step = [](const at::Tensor& x, double rate) {
    PipelineState s;
    s.set("latents", Value(x));
    return run_block("common.diffuse_step", s, {{"rate", Value(rate)}}).get("latents").tensor();
  };
  SECTION("constants are a fixed point") {
    at::Tensor c = at::full({1, 2, 6, 5}, 0.7f);
    CHECK(at::allclose(step(c, 0.2), c));
  }
  SECTION("a checkerboard's interior is damped by 1 - 8·rate") {
    at::Tensor idx = at::arange(8).view({8, 1}) + at::arange(8).view({1, 8});          // [8, 8]
    at::Tensor board = (1 - 2 * (idx % 2)).to(at::kFloat).view({1, 1, 8, 8}).clone();  // ±1
    at::Tensor out = step(board, 0.2);
    CHECK(out[0][0][3][4].item<float>() == Approx(board[0][0][3][4].item<float>() * (1 - 8 * 0.2)));
    CHECK(high_frequency_energy(out) < high_frequency_energy(board));
  }
  SECTION("replicate padding conserves the total and spreads a spike") {
    at::Tensor x = at::zeros({1, 1, 5, 5});
    x[0][0][0][0] = 1.0f;  // at the border, where padding matters
    at::Tensor before = x.clone();
    at::Tensor out = step(x, 0.25);
    CHECK(out.sum().item<double>() == Approx(1.0));
    CHECK(out.max().item<float>() < 1.0f);
    CHECK(at::equal(x, before));  // the input tensor is not modified in place
  }
  SECTION("rate 0 is the identity") {
    at::Tensor x = at::randn({2, 3, 4, 4});
    CHECK(at::equal(step(x, 0.0), x));
  }
  SECTION("latents must be [B, C, H, W] floating point") {
    CHECK_THROWS_AS(step(at::zeros({3, 4}), 0.2), InputError);
    CHECK_THROWS_AS(step(at::zeros({1, 1, 3, 4}, at::kLong), 0.2), InputError);
  }
}

TEST_CASE("to_image maps latents to [0, 1] RGB, per image", "[blocks]") {
  auto decode = [](const at::Tensor& x) {
    PipelineState s;
    s.set("latents", Value(x));
    s = run_block("common.to_image", s);
    REQUIRE(s.get("images").kind() == Kind::Image);
    return s.get("images").images().pixels;
  };
  SECTION("C >= 3 keeps the first three channels, each image spans [0, 1]") {
    at::Tensor x = at::randn({2, 4, 6, 5});
    x[1].mul_(100).add_(50);  // a different scale per image
    at::Tensor img = decode(x);
    CHECK(img.sizes() == at::IntArrayRef({2, 3, 6, 5}));
    CHECK(img.scalar_type() == at::kFloat);
    for (int64_t b = 0; b < 2; ++b) {
      CHECK(img[b].min().item<float>() == 0.0f);
      CHECK(img[b].max().item<float>() == Approx(1.0f));
    }
    // Monotone in the input: the order of the first three channels' values is kept.
    at::Tensor a = x[0].slice(0, 0, 3).flatten(), c = img[0].flatten();
    CHECK(at::equal(a.argsort(), c.argsort()));
  }
  SECTION("C == 1 becomes gray") {
    at::Tensor img = decode(at::randn({1, 1, 4, 4}));
    CHECK(img.sizes() == at::IntArrayRef({1, 3, 4, 4}));
    CHECK(at::equal(img[0][0], img[0][1]));
    CHECK(at::equal(img[0][0], img[0][2]));
  }
  SECTION("a constant image is mid-gray") {
    at::Tensor img = decode(at::full({1, 3, 2, 2}, 4.0f));
    CHECK(at::allclose(img, at::full({1, 3, 2, 2}, 0.5f)));
  }
  SECTION("C == 2 and non-4-D latents are input errors") {
    CHECK_THROWS_AS(decode(at::zeros({1, 2, 4, 4})), InputError);
    CHECK_THROWS_AS(decode(at::zeros({3, 4, 4})), InputError);
  }
}

TEST_CASE("prepare_noise → set_steps → loop(diffuse_step) → to_image smooths noise into an image", "[blocks]") {
  auto pipeline = [](int64_t steps) {
    auto loop = std::make_shared<LoopSequentialBlocks>(
        std::vector<BlockPtr>{named(reg().create_block("common.diffuse_step", {{"rate", Value(0.2)}}), "step")},
        "denoising loop", LoopOptions{"timesteps", "", "i", "t"});
    loop->set_name("denoise");
    SequentialBlocks seq({named(reg().create_block("common.prepare_noise", {{"channels", Value(int64_t{3})}}), "prepare"),
                          named(reg().create_block("common.set_steps", {}), "set_steps"), loop,
                          named(reg().create_block("common.to_image", {}), "decode")},
                         "demo");
    PipelineState s;
    s.set("seed", Value(int64_t{42}));
    s.set("num_inference_steps", Value(steps));
    run(seq, s);
    return s;
  };
  PipelineState s1 = pipeline(1), s5 = pipeline(5), s30 = pipeline(30);
  at::Tensor img = s30.get("images").images().pixels;
  CHECK(img.sizes() == at::IntArrayRef({1, 3, 64, 64}));
  CHECK(img.min().item<float>() >= 0.0f);
  CHECK(img.max().item<float>() <= 1.0f);
  CHECK(s30.get("i").to_int() == 29);  // the loop ran once per timestep

  double e1 = high_frequency_energy(s1.get("images").images().pixels);
  double e5 = high_frequency_energy(s5.get("images").images().pixels);
  double e30 = high_frequency_energy(img);
  CHECK(e5 < e1);
  CHECK(e30 < e5);
  // Deterministic: the same seed gives the bit-identical image.
  CHECK(at::equal(pipeline(30).get("images").images().pixels, img));
}

TEST_CASE("the demo recipe names registered blocks and declared params", "[blocks]") {
  // The recipe loader validates it fully; this keeps it in step with the blocks it uses.
  YAML::Node recipe = YAML::LoadFile(std::string(TESSERA_SOURCE_DIR) + "/recipes/demo/noise_to_image.yaml");
  std::function<void(const YAML::Node&)> check = [&](const YAML::Node& blocks) {
    for (const auto& b : blocks) {
      if (b["blocks"]) check(b["blocks"]);
      if (!b["block"]) continue;
      std::string id = b["block"].as<std::string>();
      INFO(id);
      const BlockTypeInfo* info = reg().find_block(id);
      REQUIRE(info);
      for (const auto& kv : b["params"]) CHECK(find_param(info->params, kv.first.as<std::string>()));
    }
  };
  check(recipe["blocks"]);
}
