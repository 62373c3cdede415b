// AutoencoderKL: keys and config as in diffusers, strict loading through from_pretrained, the component type,
// and golden parity of tiny_sd_vae / tiny_sdxl_vae.
#include <catch2/catch.hpp>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <filesystem>
#include <random>
#include <sstream>

#include "tessera/error.h"
#include "tessera/registry.h"
#include "engine/safetensors.h"
#include "models/loading/state_dict.h"
#include "models/register.h"
#include "models/vae/autoencoder_kl.h"
#include "tools/parity/parity.h"
#include "tools/parity/vae_cases.h"

using namespace tessera;
namespace fs = std::filesystem;

namespace {
const std::string kFixtures = std::string(TESSERA_SOURCE_DIR) + "/tests/fixtures/parity";
const std::string kTinySd = kFixtures + "/models/tiny-sd";
}  // namespace

TEST_CASE("AutoencoderKL loads tiny-sd and tiny-sdxl with every key matched", "[model][vae]") {
  for (const char* model : {"tiny-sd", "tiny-sdxl"}) {
    auto vae = AutoencoderKLImpl::from_pretrained(kFixtures + "/models/" + model, "vae");
    CHECK(vae->type() == "AutoencoderKL");
    CHECK(vae->config.block_out_channels == std::vector<int64_t>{32, 64});
    CHECK(vae->vae_scale_factor() == 2);
    CHECK(vae->nbytes() > 2000000);
    CHECK_FALSE(vae->config.shift_factor.has_value());
    if (std::string(model) == "tiny-sd") {
      CHECK(vae->config.scaling_factor == Approx(0.18215));
      CHECK(vae->config.force_upcast);
    } else {
      CHECK(vae->config.scaling_factor == Approx(0.13025));
      CHECK_FALSE(vae->config.force_upcast);
    }
  }
}

TEST_CASE("AutoencoderKL: a renamed or reshaped VAE tensor is a ModelLoadError naming it", "[model][vae]") {
  static std::mt19937_64 rng(std::random_device{}());
  fs::path dir = fs::temp_directory_path() / ("tessera_vae_" + std::to_string(rng()));
  fs::create_directories(dir / "vae");
  fs::copy_file(kTinySd + "/vae/config.json", dir / "vae/config.json");
  auto tensors = read_safetensors_files({kTinySd + "/vae/diffusion_pytorch_model.safetensors"});
  const std::string key = "encoder.mid_block.attentions.0.to_q.weight";
  REQUIRE(tensors.count(key));
  auto renamed = tensors;
  renamed["encoder.mid_block.attentions.0.query.weight"] = renamed[key];
  renamed.erase(key);
  save_safetensors((dir / "vae/diffusion_pytorch_model.safetensors").string(), renamed);
  CHECK_THROWS_WITH(AutoencoderKLImpl::from_pretrained(dir.string(), "vae"),
                    Catch::Contains(key) && Catch::Contains("query.weight"));
  auto reshaped = tensors;
  reshaped["quant_conv.weight"] = reshaped["quant_conv.weight"].flatten();
  save_safetensors((dir / "vae/diffusion_pytorch_model.safetensors").string(), reshaped);
  CHECK_THROWS_WITH(AutoencoderKLImpl::from_pretrained(dir.string(), "vae"),
                    Catch::Contains("quant_conv.weight") && Catch::Contains("[64]") &&
                        Catch::Contains("[8, 8, 1, 1]"));
  std::error_code ec;
  fs::remove_all(dir, ec);
}

TEST_CASE("AutoencoderKL config errors name the field and file", "[model][vae]") {
  CHECK_THROWS_AS(AutoencoderKLImpl::from_pretrained(kTinySd, "vae", "", nlohmann::json{{"layers_per_block", "2"}}),
                  ModelLoadError);
  CHECK_THROWS_WITH(AutoencoderKLImpl::from_pretrained(kTinySd, "vae", "", nlohmann::json{{"latent_channels", 1.5}}),
                    Catch::Contains("latent_channels") && Catch::Contains("config.json"));
  CHECK_THROWS_WITH(
      AutoencoderKLImpl::from_pretrained(kTinySd, "vae", "", nlohmann::json{{"up_block_types", {"UpDecoderBlock2D"}}}),
      Catch::Contains("up_block_types"));
}

TEST_CASE("AutoencoderKL is a registered component; sample draws like diffusers", "[model][vae]") {
  Registry registry;
  register_builtin_models(registry);
  const auto* info = registry.find_component_type("AutoencoderKL");
  REQUIRE(info);
  ComponentSpec spec;
  spec.name = "vae";
  spec.type = "AutoencoderKL";
  spec.from = kTinySd;
  spec.subfolder = "vae";
  auto component = registry.create_component(spec);
  auto vae = std::dynamic_pointer_cast<AutoencoderKLImpl>(component);
  REQUIRE(vae);

  c10::InferenceMode guard;
  at::Tensor image = torch::rand({1, 3, 16, 16}) * 2 - 1;
  DiagonalGaussianDistribution dist = vae->encode(image);
  CHECK(dist.mean.sizes() == at::IntArrayRef{1, 4, 8, 8});
  at::Generator g1 = at::detail::createCPUGenerator(42), g2 = at::detail::createCPUGenerator(42);
  at::Tensor noise = at::randn({1, 4, 8, 8}, g2);
  CHECK(dist.sample(g1).equal(dist.sample_with_noise(noise)));
  CHECK(vae->decode(dist.mode()).sizes() == at::IntArrayRef{1, 3, 16, 16});
  CHECK_THROWS_AS(vae->decode(image), ExecutionError);
}

TEST_CASE("tiny_sd_vae and tiny_sdxl_vae golden cases pass", "[parity][model][vae]") {
  register_vae_case_runner();
  std::ostringstream out;
  ParityOptions o;
  o.manifest = kFixtures + "/manifest.json";
  o.filter_regex = "^tiny_sdx?l?_vae$";
  o.verbose = true;
  int rc = run_parity(o, out);
  INFO(out.str());
  CHECK(rc == 0);
  CHECK(out.str().find("PASS tiny_sd_vae ") != std::string::npos);
  CHECK(out.str().find("PASS tiny_sdxl_vae ") != std::string::npos);
}

TEST_CASE("AutoencoderKL tiled decode: tiles decoded alone, blended only in the overlap", "[models][vae]") {
  c10::InferenceMode guard;
  auto vae = AutoencoderKLImpl::from_pretrained(kTinySd, "vae");
  // tiny-sd's VAE: sample_size 64, factor 2 → latent tiles of 32 stepping by 24; 16-pixel blends; 48 kept.
  REQUIRE(vae->config.sample_size == 64);
  REQUIRE(vae->vae_scale_factor() == 2);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  const at::Tensor z = at::randn({1, 4, 48, 48}, gen);

  const at::Tensor one_tile = z.slice(2, 0, 32).slice(3, 0, 32);
  vae->enable_tiling(true);
  CHECK(at::equal(vae->decode(one_tile), (vae->enable_tiling(false), vae->decode(one_tile))));  // ≤ 1 tile: untiled

  vae->enable_tiling(false);
  const at::Tensor untiled = vae->decode(z);                                                   // [1, 3, 96, 96]
  const at::Tensor t00 = vae->decode(one_tile);                                                // rows 0-63, cols 0-63
  const at::Tensor t01 = vae->decode(z.slice(2, 0, 32).slice(3, 24, 48));                      // rows 0-63, cols 48-95
  vae->enable_tiling(true);
  const at::Tensor tiled = vae->decode(z);
  vae->enable_tiling(false);
  REQUIRE(tiled.sizes() == untiled.sizes());
  // The first tile's kept 48×48 is that tile decoded alone; the second tile past its 16-column blend likewise.
  CHECK(at::equal(tiled.slice(2, 0, 48).slice(3, 0, 48), t00.slice(2, 0, 48).slice(3, 0, 48)));
  CHECK(at::equal(tiled.slice(2, 0, 48).slice(3, 64, 96), t01.slice(2, 0, 48).slice(3, 16, 48)));
  // In the blend band every value lies between the two tiles' values (a convex combination).
  const at::Tensor a = t00.slice(2, 0, 48).slice(3, 48, 64), b = t01.slice(2, 0, 48).slice(3, 0, 16);
  const at::Tensor band = tiled.slice(2, 0, 48).slice(3, 48, 64);
  CHECK((band >= at::minimum(a, b) - 1e-6).all().item<bool>());
  CHECK((band <= at::maximum(a, b) + 1e-6).all().item<bool>());
  CHECK_FALSE(at::equal(band, a));
  // Tiling changes the image only by tile-local effects (group norms see one tile): same layout and range.
  CHECK(torch::nn::functional::cosine_similarity(tiled.flatten(), untiled.flatten(),
                                                 torch::nn::functional::CosineSimilarityFuncOptions().dim(0))
            .item<double>() > 0.5);
}

TEST_CASE("AutoencoderKL tiled encode gives latents of the untiled shape", "[models][vae]") {
  c10::InferenceMode guard;
  auto vae = AutoencoderKLImpl::from_pretrained(kTinySd, "vae");
  const at::Tensor x = at::rand({1, 3, 96, 96}) * 2 - 1;
  const at::Tensor untiled = vae->encode(x).mean;
  vae->enable_tiling(true);
  const at::Tensor tiled = vae->encode(x).mean;
  const at::Tensor first = vae->encode(x.slice(2, 0, 64).slice(3, 0, 64)).mean;  // one tile: untiled path
  vae->enable_tiling(false);
  REQUIRE(tiled.sizes() == untiled.sizes());  // [1, 4, 48, 48]
  // Latent tiles are 32 stepping by 48 pixels; 8 latents blend; 24 kept: the first 24×24 is tile 0 alone.
  CHECK(at::equal(tiled.slice(2, 0, 24).slice(3, 0, 24), first.slice(2, 0, 24).slice(3, 0, 24)));
}
