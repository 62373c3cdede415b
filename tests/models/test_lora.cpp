// LoRA fusing on the tiny models: formats agree, the weight scales linearly, unfuse restores the weights bit for
// bit, and bad files are refused with their names. (Parity with diffusers' fused models is in the
// manifest_formats cases, run by tests/blocks.)
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <filesystem>
#include <random>

#include "tessera/error.h"
#include "engine/safetensors.h"
#include "models/adapters/lora.h"
#include "models/loading/diffusers_folder.h"
#include "models/text/clip_text_model.h"
#include "models/unet/unet_2d_condition.h"

using namespace tessera;
namespace fs = std::filesystem;

namespace {

const std::string kModels = std::string(TESSERA_SOURCE_DIR) + "/tests/fixtures/parity/models";
const std::string kKohya = kModels + "/lora/tiny-sd_kohya_locon.safetensors";
const std::string kPeft = kModels + "/lora/tiny-sd_peft.safetensors";

struct TempDir {
  fs::path dir;
  TempDir() {
    static std::mt19937_64 rng(std::random_device{}());
    dir = fs::temp_directory_path() / ("tessera_lora_" + std::to_string(rng()));
    fs::create_directories(dir);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::string path(const std::string& name) const { return (dir / name).string(); }
};

std::map<std::string, at::Tensor> weights(torch::nn::Module& m) {
  std::map<std::string, at::Tensor> out;
  for (const auto& p : m.named_parameters()) out[p.key()] = p.value().clone();
  return out;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST_CASE("LoRA: kohya LoCon and PEFT files of the same deltas fuse to the same weights; unfuse restores them",
          "[lora]") {
  torch::NoGradGuard no_grad;
  const nlohmann::json config = read_component_config(kModels + "/tiny-sd", "unet");
  auto unet = UNet2DConditionModelImpl::from_pretrained(kModels + "/tiny-sd", "unet");
  const auto base = weights(*unet);
  const LoraFile kohya = LoraFile::open(kKohya), peft = LoraFile::open(kPeft);
  CHECK(kohya.modules_for("unet").size() == 117);
  CHECK(kohya.modules_for("text_encoder").size() == 30);

  FusedLoras a = fuse_loras(*unet, "unet", {{&kohya, 1.0}}, &config);
  CHECK(a.size() == 117);
  const auto fused_kohya = weights(*unet);
  a.unfuse();
  for (const auto& [name, w] : weights(*unet)) {
    INFO(name);
    REQUIRE(at::equal(w, base.at(name)));  // bit for bit
  }
  FusedLoras b = fuse_loras(*unet, "unet", {{&peft, 1.0}}, &config);
  size_t changed = 0;
  for (const auto& [name, w] : weights(*unet)) {
    INFO(name);
    CHECK(at::allclose(w, fused_kohya.at(name), 1e-6, 1e-6));
    changed += !at::equal(w, base.at(name));
  }
  CHECK(changed == 117);  // one weight per LoRA module, the rest untouched
  b.unfuse();
}

TEST_CASE("LoRA: the weight scales the delta linearly, and two LoRAs stack", "[lora]") {
  torch::NoGradGuard no_grad;
  auto te = load_clip_text_model(kModels + "/tiny-sd", "text_encoder");
  const auto base = weights(*te);
  const LoraFile kohya = LoraFile::open(kKohya);
  const LoraFile second = LoraFile::open(kModels + "/lora/tiny-sd_kohya_attn_r8_noalpha.safetensors");
  FusedLoras one = fuse_loras(*te, "text_encoder", {{&kohya, 1.0}});
  const auto full = weights(*te);
  one.unfuse();
  FusedLoras half = fuse_loras(*te, "text_encoder", {{&kohya, 0.5}});
  const std::string q = "text_model.encoder.layers.0.self_attn.q_proj.weight";
  const at::Tensor delta = full.at(q) - base.at(q);
  CHECK(delta.abs().max().item<double>() > 1e-3);
  CHECK(at::allclose(weights(*te).at(q) - base.at(q), delta * 0.5, 1e-5, 1e-6));
  half.unfuse();
  FusedLoras both = fuse_loras(*te, "text_encoder", {{&kohya, 1.0}, {&second, 1.0}});
  const std::string fc1 = "text_model.encoder.layers.2.mlp.fc1.weight";  // in both files
  FusedLoras only_second = FusedLoras();
  const at::Tensor stacked = weights(*te).at(fc1);
  both.unfuse();
  only_second = fuse_loras(*te, "text_encoder", {{&second, 1.0}});
  const at::Tensor second_delta = weights(*te).at(fc1) - base.at(fc1);
  only_second.unfuse();
  CHECK(at::allclose(stacked, full.at(fc1) + second_delta, 1e-5, 1e-6));
}

TEST_CASE("LoRA: bad files are refused, naming the file and the module", "[lora]") {
  TempDir t;
  auto unet = UNet2DConditionModelImpl::from_pretrained(kModels + "/tiny-sd", "unet");
  const nlohmann::json config = read_component_config(kModels + "/tiny-sd", "unet");
  auto save = [&](const std::string& name, const std::map<std::string, at::Tensor>& tensors) {
    save_safetensors(t.path(name), tensors);
    return t.path(name);
  };
  const std::string m = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q";
  SECTION("ranks differ between down and up") {
    const auto f = save("rank.safetensors", {{m + ".lora_down.weight", at::zeros({4, 64})},
                                             {m + ".lora_up.weight", at::zeros({64, 8})}});
    CHECK_THAT(error_of([&] { LoraFile::open(f); }),
               Catch::Contains("rank differs") && Catch::Contains(m) && Catch::Contains("rank.safetensors"));
  }
  SECTION("LoHa, LoKr and DoRA are refused by name") {
    CHECK_THAT(error_of([&] { LoraFile::open(save("loha.safetensors", {{m + ".hada_w1_a", at::zeros({4, 4})}})); }),
               Catch::Contains("LoHa"));
    CHECK_THAT(error_of([&] { LoraFile::open(save("lokr.safetensors", {{m + ".lokr_w1", at::zeros({4, 4})}})); }),
               Catch::Contains("LoKr"));
    CHECK_THAT(error_of([&] {
                 LoraFile::open(save("dora.safetensors", {{m + ".lora_down.weight", at::zeros({4, 64})},
                                                          {m + ".lora_up.weight", at::zeros({64, 4})},
                                                          {m + ".dora_scale", at::zeros({1, 64})}}));
               }),
               Catch::Contains("DoRA"));
  }
  SECTION("keys of no component, a lone down tensor") {
    CHECK_THAT(error_of([&] { LoraFile::open(save("foreign.safetensors", {{"model.weight", at::zeros({2, 2})}})); }),
               Catch::Contains("belong to no LoRA module") && Catch::Contains("model.weight"));
    CHECK_THAT(error_of([&] { LoraFile::open(save("lone.safetensors", {{m + ".lora_down.weight", at::zeros({4, 64})}})); }),
               Catch::Contains("no up"));
  }
  SECTION("an SDXL LoRA on the SD1 UNet does not fit: an error, not a silent no-op") {
    const LoraFile sdxl = LoraFile::open(kModels + "/lora/tiny-sdxl_kohya_locon_fp16.safetensors");
    const std::string e = error_of([&] { fuse_loras(*unet, "unet", {{&sdxl, 1.0}}, &config); });
    CHECK_THAT(e, Catch::Contains("match no Linear") || Catch::Contains("whose weight is"));
  }
  SECTION("a module name the model does not have") {
    const std::string bad = "lora_unet_down_blocks_7_resnets_0_conv1";
    const auto f = save("unknown.safetensors", {{bad + ".lora_down.weight", at::zeros({4, 32, 3, 3})},
                                                {bad + ".lora_up.weight", at::zeros({32, 4, 1, 1})}});
    const LoraFile lora = LoraFile::open(f);
    CHECK_THAT(error_of([&] { fuse_loras(*unet, "unet", {{&lora, 1.0}}, &config); }),
               Catch::Contains(bad) && Catch::Contains("match no Linear or Conv2d"));
  }
  SECTION("weights that are not numbers and a file given twice") {
    CHECK_THAT(error_of([&] { parse_lora_weight(LoraSpec{"a.safetensors", "strong"}); }),
               Catch::Contains("'strong'") && Catch::Contains("not a number"));
    ComponentSpec spec;
    spec.name = "unet";
    spec.subfolder = "unet";
    spec.loras = {{kKohya, "1"}, {kKohya, "0.5"}};
    CHECK_THAT(error_of([&] { fuse_component_loras(*unet, spec, config); }), Catch::Contains("given twice"));
  }
}
