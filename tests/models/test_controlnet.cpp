// ControlNetModel on the tiny ControlNets, and the UNet's residual inputs. (Parity with diffusers' ControlNet
// residuals and the UNet's noise prediction with them is in the manifest_control cases, run by tests/blocks.)
#include <catch2/catch.hpp>

#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "tessera/error.h"
#include "tessera/registry.h"
#include "engine/safetensors.h"
#include "models/controlnets/controlnet_model.h"
#include "models/loading/component_source.h"
#include "models/loading/config_reader.h"
#include "models/loading/ldm_names.h"
#include "models/loading/state_dict.h"
#include "models/register.h"
#include "models/unet/unet_2d_condition.h"

using namespace tessera;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {
const std::string kModels = std::string(TESSERA_SOURCE_DIR) + "/tests/fixtures/parity/models";
}  // namespace

TEST_CASE("ControlNet: residuals scale with conditioning_scale; guess mode uses logspace(-1, 0) scales",
          "[controlnet]") {
  c10::InferenceMode guard;
  auto cn = ControlNetModelImpl::from_pretrained(kModels + "/tiny-sd-controlnet");
  at::manual_seed(3);
  const at::Tensor sample = at::randn({1, 4, 8, 12}), ehs = at::randn({1, 77, 32}), cond = at::rand({1, 3, 16, 24});
  const at::Tensor t = at::scalar_tensor(500, at::kLong);
  const ControlNetOutput one = cn->forward(sample, t, ehs, cond, {}, 1.0);
  REQUIRE(one.down_block_res_samples.size() == 6);  // conv_in, 2 resnets, downsampler, 2 resnet+attention
  CHECK(one.down_block_res_samples[0].sizes() == at::IntArrayRef({1, 32, 8, 12}));
  CHECK(one.down_block_res_samples[5].sizes() == at::IntArrayRef({1, 64, 4, 6}));
  CHECK(one.mid_block_res_sample.abs().max().item<double>() > 1e-3);  // the tiny ControlNet's zero convs are not zero
  const ControlNetOutput half = cn->forward(sample, t, ehs, cond, {}, 0.5);
  const ControlNetOutput zero = cn->forward(sample, t, ehs, cond, {}, 0.0);
  const ControlNetOutput guess = cn->forward(sample, t, ehs, cond, {}, 1.0, /*guess_mode=*/true);
  const at::Tensor scales = at::logspace(-1, 0, 7, 10.0, at::kFloat);
  for (size_t j = 0; j < 6; ++j) {
    INFO("residual " << j);
    CHECK(at::allclose(half.down_block_res_samples[j], one.down_block_res_samples[j] * 0.5, 1e-6, 1e-7));
    CHECK(zero.down_block_res_samples[j].abs().max().item<double>() == 0.0);
    CHECK(at::allclose(guess.down_block_res_samples[j], one.down_block_res_samples[j] * scales[j], 1e-6, 1e-7));
  }
  CHECK(at::allclose(guess.mid_block_res_sample, one.mid_block_res_sample, 1e-6, 1e-7));  // scales[-1] == 1
}

TEST_CASE("UNet residual inputs: zeros change nothing, residuals change the prediction, a wrong count is an error",
          "[controlnet]") {
  c10::InferenceMode guard;
  auto unet = UNet2DConditionModelImpl::from_pretrained(kModels + "/tiny-sd", "unet");
  auto cn = ControlNetModelImpl::from_pretrained(kModels + "/tiny-sd-controlnet");
  at::manual_seed(4);
  const at::Tensor sample = at::randn({2, 4, 8, 8}), ehs = at::randn({2, 77, 32}), cond = at::rand({2, 3, 16, 16});
  const at::Tensor t = at::scalar_tensor(300, at::kLong);
  const at::Tensor base = unet->forward(sample, t, ehs);
  const ControlNetOutput r = cn->forward(sample, t, ehs, cond, {}, 1.0);
  UNet2DConditionInputs zeros;
  for (const auto& d : r.down_block_res_samples) zeros.down_block_additional_residuals.push_back(at::zeros_like(d));
  zeros.mid_block_additional_residual = at::zeros_like(r.mid_block_res_sample);
  CHECK(at::equal(unet->forward(sample, t, ehs, zeros), base));
  UNet2DConditionInputs with;
  with.down_block_additional_residuals = r.down_block_res_samples;
  with.mid_block_additional_residual = r.mid_block_res_sample;
  CHECK((unet->forward(sample, t, ehs, with) - base).abs().max().item<double>() > 1e-3);
  UNet2DConditionInputs wrong;
  wrong.down_block_additional_residuals = {r.down_block_res_samples[0]};
  CHECK_THROWS_WITH(unet->forward(sample, t, ehs, wrong), Catch::Contains("1 down-block residuals given") &&
                                                              Catch::Contains("6 skip connections"));
  CHECK_THROWS_WITH(cn->forward(sample, t, ehs, at::rand({2, 1, 16, 16})),
                    Catch::Contains("controlnet_cond must be [B, 3, H, W]"));
}

namespace {
/// tiny-sd-controlnet's weights under the original ControlNet (cldm.py) names, `prefix` before each: the UNet's
/// encoder half as the LDM UNet names it (unet_name_table, whose UNet side the single-file goldens check against
/// diffusers), and the ControlNet's own layers written out here from the original layout: the hint block's convs
/// at every other index of input_hint_block (SiLUs between), one zero conv per skip, the mid block's.
std::map<std::string, at::Tensor> tiny_controlnet_in_ldm_layout(const std::string& prefix) {
  nlohmann::json config = nlohmann::json::parse(std::ifstream(kModels + "/tiny-sd-controlnet/config.json"));
  config["up_block_types"] = {"UpBlock2D", "UpBlock2D"};  // a ControlNet has none; the UNet config wants them
  const NameTable unet = unet_name_table(UNet2DConditionModelConfig::from_json(config, "tiny-sd-controlnet"));
  const std::map<std::string, std::string> own = {
      {"controlnet_cond_embedding.conv_in", "input_hint_block.0"},
      {"controlnet_cond_embedding.blocks.0", "input_hint_block.2"},
      {"controlnet_cond_embedding.blocks.1", "input_hint_block.4"},
      {"controlnet_cond_embedding.conv_out", "input_hint_block.6"},
      {"controlnet_down_blocks.0", "zero_convs.0.0"}, {"controlnet_down_blocks.1", "zero_convs.1.0"},
      {"controlnet_down_blocks.2", "zero_convs.2.0"}, {"controlnet_down_blocks.3", "zero_convs.3.0"},
      {"controlnet_down_blocks.4", "zero_convs.4.0"}, {"controlnet_down_blocks.5", "zero_convs.5.0"},
      {"controlnet_mid_block", "middle_block_out.0"}};
  std::map<std::string, at::Tensor> out;
  for (const auto& [key, t] :
       read_safetensors_files({kModels + "/tiny-sd-controlnet/diffusion_pytorch_model.safetensors"})) {
    const size_t dot = key.rfind('.');  // module + ".weight" / ".bias"
    const std::string module = key.substr(0, dot), param = key.substr(dot);
    std::string ldm;
    if (own.count(module)) ldm = own.at(module) + param;
    else if (auto mapped = unet.to_ldm(key)) ldm = *mapped;
    REQUIRE_FALSE(ldm.empty());
    out[prefix + ldm] = t.clone();
  }
  return out;
}

std::shared_ptr<ControlNetModelImpl> create_controlnet(const std::string& from, const std::string& config_from) {
  static Registry registry = [] {
    Registry r;
    register_builtin_models(r);
    return r;
  }();
  ComponentSpec spec;
  spec.name = "controlnet";
  spec.type = "ControlNetModel";
  spec.from = from;
  spec.config_from = config_from;
  return std::dynamic_pointer_cast<ControlNetModelImpl>(registry.find_component_type(spec.type)->create(spec));
}
}  // namespace

TEST_CASE("ControlNet files in the original layout (control_*.safetensors) load as the diffusers folder does",
          "[controlnet][single_file]") {
  c10::InferenceMode guard;
  const auto folder = ControlNetModelImpl::from_pretrained(kModels + "/tiny-sd-controlnet");
  const auto expected = folder->named_parameters();
  const fs::path dir = fs::temp_directory_path() / ("tessera-cn-ldm-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  // The extracted files have no prefix; a training checkpoint has control_model.* (beside the SD model's keys).
  for (const std::string prefix : {"", "control_model."}) {
    INFO("prefix '" << prefix << "'");
    auto tensors = tiny_controlnet_in_ldm_layout(prefix);
    if (!prefix.empty()) tensors["model.diffusion_model.out.2.bias"] = at::zeros({4});  // ignored: not the ControlNet's
    const std::string file = (dir / "control_tiny.safetensors").string();
    save_safetensors(file, tensors);
    const auto cn = create_controlnet(file, kModels + "/tiny-sd-controlnet");
    REQUIRE(cn);
    const auto got = cn->named_parameters();
    REQUIRE(got.size() == expected.size());
    for (const auto& p : expected) {
      INFO(p.key());
      CHECK(at::equal(got[p.key()], p.value()));
    }
    // Without a config folder the family comes from the weights; the tiny width is none of the shipped ones.
    CHECK_THROWS_WITH(create_controlnet(file, ""), Contains("cross-attention width 32") &&
                                                       Contains("--set controlnet_config="));
  }
  // A key the table does not know is named (a file of another layout, not silently dropped).
  auto tensors = tiny_controlnet_in_ldm_layout("");
  tensors["input_hint_block.16.weight"] = at::zeros({1});
  save_safetensors((dir / "extra.safetensors").string(), tensors);
  CHECK_THROWS_WITH(create_controlnet((dir / "extra.safetensors").string(), kModels + "/tiny-sd-controlnet"),
                    Contains("input_hint_block.16.weight"));
  fs::remove_all(dir);
}

TEST_CASE("an original-layout SD 1.5 ControlNet takes the shipped sd1 UNet config, its widths read from the file",
          "[controlnet][single_file]") {
  c10::InferenceMode guard;
  // Only the tensors the config is read from, with control_v11p_sd15's shapes.
  std::map<std::string, at::Tensor> t;
  t["input_hint_block.0.weight"] = at::zeros({16, 3, 3, 3});
  const std::vector<std::pair<int, int64_t>> convs = {{2, 16}, {4, 32}, {6, 32}, {8, 96}, {10, 96}, {12, 256}, {14, 320}};
  for (const auto& [i, width] : convs) t["input_hint_block." + std::to_string(i) + ".weight"] = at::zeros({width, 1, 1, 1});
  t["input_blocks.0.0.weight"] = at::zeros({320, 4, 3, 3});
  t["input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"] = at::zeros({320, 768});
  const fs::path file = fs::temp_directory_path() / ("tessera-cn-sd15-" + std::to_string(::getpid()) + ".safetensors");
  save_safetensors(file.string(), t);
  ComponentSpec spec;
  spec.name = "controlnet";
  spec.type = "ControlNetModel";
  spec.from = file.string();
  ModelConfig config = pretrained_component_config(spec);
  CHECK_FALSE(config.json().contains("up_block_types"));  // the UNet's up half is not the ControlNet's
  CHECK(config.json().at("cross_attention_dim") == 768);  // from the shipped sd1 UNet config
  const ControlNetModelConfig cn = ControlNetModelConfig::from_config(config);
  CHECK(cn.conditioning_embedding_out_channels == std::vector<int64_t>{16, 32, 96, 256});
  CHECK(cn.conditioning_channels == 3);
  CHECK(cn.unet.in_channels == 4);
  CHECK(cn.unet.cross_attention_dim == std::vector<int64_t>(4, 768));
  CHECK(cn.unet.block_out_channels == std::vector<int64_t>{320, 640, 1280, 1280});
  fs::remove(file);
}
