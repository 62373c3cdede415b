// UNet2DConditionModel: parity with diffusers on the tiny SD / SDXL checkpoints, config handling, layer hooks.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <string>

#include "tessera/error.h"
#include "tessera/registry.h"
#include "engine/safetensors.h"
#include "models/common/transformer_2d.h"
#include "models/unet/unet_2d_condition.h"

using namespace tessera;

namespace {

const std::string kParity = std::string(TESSERA_SOURCE_DIR) + "/tests/fixtures/parity";

at::Tensor golden(const SafetensorsFile& f, const std::string& name) { return f.tensor(name).clone(); }

// Manifest tolerance of the UNet cases: |got - exp| <= 1e-4 + 1e-3 |exp|.
void check_close(const at::Tensor& got, const at::Tensor& expected, const std::string& what) {
  REQUIRE(got.sizes() == expected.sizes());
  const double max_abs = (got - expected).abs().max().item<double>();
  const bool ok = ((got - expected).abs() <= 1e-4 + 1e-3 * expected.abs()).all().item<bool>();
  const double cos = at::cosine_similarity(got.flatten(), expected.flatten(), 0).item<double>();
  INFO(what << ": max_abs_diff=" << max_abs << " cos=" << cos);
  CHECK(ok);
}

nlohmann::json tiny_sd_config() {
  return {{"block_out_channels", {32, 64}},
          {"layers_per_block", 2},
          {"down_block_types", {"DownBlock2D", "CrossAttnDownBlock2D"}},
          {"up_block_types", {"CrossAttnUpBlock2D", "UpBlock2D"}},
          {"attention_head_dim", {2, 4}},
          {"cross_attention_dim", 32},
          {"norm_num_groups", 32}};
}

}  // namespace

TEST_CASE("tiny_sd_unet matches diffusers (scalar and per-batch timestep)", "[model][parity]") {
  c10::InferenceMode guard;
  auto unet = UNet2DConditionModelImpl::from_pretrained(kParity + "/models/tiny-sd", "unet");
  SafetensorsFile f(kParity + "/cases/tiny_sd_unet.safetensors");
  const at::Tensor sample = golden(f, "sample"), ehs = golden(f, "encoder_hidden_states");
  at::Tensor out = unet->forward(sample, at::scalar_tensor(500, at::kLong), ehs);
  check_close(out, golden(f, "out_scalar_timestep"), "out_scalar_timestep");
  out = unet->forward(sample, golden(f, "timestep_per_batch"), ehs);
  check_close(out, golden(f, "out_per_batch_timestep"), "out_per_batch_timestep");
}

TEST_CASE("tiny_sdxl_unet matches diffusers (text_embeds, time_ids)", "[model][parity]") {
  c10::InferenceMode guard;
  auto unet = UNet2DConditionModelImpl::from_pretrained(kParity + "/models/tiny-sdxl", "unet");
  SafetensorsFile f(kParity + "/cases/tiny_sdxl_unet.safetensors");
  UNet2DConditionInputs in;
  in.text_embeds = golden(f, "text_embeds");
  in.time_ids = golden(f, "time_ids");
  at::Tensor out = unet->forward(golden(f, "sample"), at::scalar_tensor(500, at::kLong),
                                 golden(f, "encoder_hidden_states"), in);
  check_close(out, golden(f, "out"), "out");
}

TEST_CASE("a PAG identity hook on batch slice 1 leaves slice 0 bit-identical", "[model]") {
  c10::InferenceMode guard;
  auto unet = UNet2DConditionModelImpl::from_pretrained(kParity + "/models/tiny-sd", "unet");
  at::manual_seed(7);
  const at::Tensor sample = at::randn({2, 4, 16, 16}), ehs = at::randn({2, 77, 32});
  const at::Tensor t = at::scalar_tensor(321, at::kLong);
  const at::Tensor plain = unet->forward(sample, t, ehs);

  UNet2DConditionInputs in;
  LayerHook h{LayerHookKind::IdentityAttention, {{0}, "mid_block.attentions.0.transformer_blocks"}};
  h.batch_start = 1;
  h.batch_size = 1;
  in.hooks = {h};
  const at::Tensor hooked = unet->forward(sample, t, ehs, in);
  CHECK(at::equal(hooked[0], plain[0]));
  CHECK_FALSE(at::allclose(hooked[1], plain[1]));

  // The hooked slice equals a run with diffusers' PAG identity processor on that layer (batch [cond, perturbed]).
  REQUIRE(unet->set_attn_processor("^mid_block\\.attentions\\.0\\.transformer_blocks\\.0\\.attn1$",
                                   [] { return std::make_shared<PAGIdentitySelfAttnProcessor>(2); }) == 1);
  const at::Tensor pag = unet->forward(sample, t, ehs);
  // (The processor runs the unperturbed half as its own batch, so it is close to, not bit-equal with, slice 0.)
  CHECK((pag[1] - hooked[1]).abs().max().item<double>() < 1e-5);
  CHECK((pag[0] - plain[0]).abs().max().item<double>() < 1e-5);
}

TEST_CASE("SLG skip hooks change only their slice; bad hook names are errors", "[model]") {
  c10::InferenceMode guard;
  auto unet = UNet2DConditionModelImpl::from_pretrained(kParity + "/models/tiny-sd", "unet");
  at::manual_seed(3);
  const at::Tensor sample = at::randn({2, 4, 8, 8}), ehs = at::randn({2, 7, 32});
  const at::Tensor t = at::tensor({10.0, 900.0});
  const at::Tensor plain = unet->forward(sample, t, ehs);
  UNet2DConditionInputs in;
  LayerHook h{LayerHookKind::SkipBlock, {{0}, "down_blocks.1.attentions.1.transformer_blocks"}};
  h.batch_start = 0;
  h.batch_size = 1;
  in.hooks = {h};
  const at::Tensor hooked = unet->forward(sample, t, ehs, in);
  CHECK(at::equal(hooked[1], plain[1]));
  CHECK_FALSE(at::allclose(hooked[0], plain[0]));

  in.hooks[0].layers.fqn = "transformer_blocks";
  CHECK_THROWS_AS(unet->forward(sample, t, ehs, in), ValidationError);
  in.hooks[0].layers.fqn = "auto";
  in.hooks[0].layers.indices = {3};
  CHECK_THROWS_AS(unet->forward(sample, t, ehs, in), ValidationError);
}

TEST_CASE("UNet2DConditionModel config: defaults, SD2/SDXL fields, unsupported features", "[model]") {
  auto c = UNet2DConditionModelConfig::from_json(nlohmann::json::object());
  CHECK(c.block_out_channels == std::vector<int64_t>{320, 640, 1280, 1280});
  CHECK(c.attention_head_dim == std::vector<int64_t>{8, 8, 8, 8});
  CHECK(c.cross_attention_dim == std::vector<int64_t>{1280, 1280, 1280, 1280});
  CHECK(c.layers_per_block == std::vector<int64_t>{2, 2, 2, 2});

  nlohmann::json sd2 = nlohmann::json::object();
  sd2["attention_head_dim"] = {5, 10, 20, 20};
  sd2["use_linear_projection"] = true;
  sd2["upcast_attention"] = true;
  sd2["cross_attention_dim"] = 1024;
  auto c2 = UNet2DConditionModelConfig::from_json(sd2);
  CHECK(c2.attention_head_dim == std::vector<int64_t>{5, 10, 20, 20});
  CHECK(c2.upcast_attention);

  nlohmann::json bad = tiny_sd_config();
  bad["class_embed_type"] = "timestep";
  CHECK_THROWS_AS(UNet2DConditionModelConfig::from_json(bad), ModelLoadError);
  bad = tiny_sd_config();
  bad["num_attention_heads"] = 8;
  CHECK_THROWS_AS(UNet2DConditionModelConfig::from_json(bad), ModelLoadError);
  bad = tiny_sd_config();
  bad["attention_head_dim"] = {2, 4, 8};
  CHECK_THROWS_AS(UNet2DConditionModelConfig::from_json(bad), ModelLoadError);
}

TEST_CASE("LCM timestep_cond and odd latent sizes run", "[model]") {
  c10::InferenceMode guard;
  nlohmann::json j = tiny_sd_config();
  j["time_cond_proj_dim"] = 16;
  UNet2DConditionModel unet(UNet2DConditionModelConfig::from_json(j));
  unet->eval();
  // cond_proj is a bias-free Linear under time_embedding, as in LCM checkpoints.
  CHECK(unet->named_parameters().contains("time_embedding.cond_proj.weight"));
  CHECK_FALSE(unet->named_parameters().contains("time_embedding.cond_proj.bias"));
  UNet2DConditionInputs in;
  in.timestep_cond = at::randn({2, 16});
  // 9x11 is not a multiple of the overall up factor: the upsampler follows the skip sizes.
  at::Tensor out = unet->forward(at::randn({2, 4, 9, 11}), at::tensor({1.0, 2.0}), at::randn({2, 5, 32}), in);
  CHECK(out.sizes().vec() == std::vector<int64_t>{2, 4, 9, 11});
  CHECK_THROWS_AS(unet->forward(at::randn({2, 4, 8, 8}), at::tensor({1.0, 2.0, 3.0}), at::randn({2, 5, 32})),
                  ExecutionError);
}

TEST_CASE("UNet2DConditionModel is a registered component type", "[model]") {
  Registry registry;
  register_unet_2d_condition(registry);
  const ComponentTypeInfo* info = registry.find_component_type("UNet2DConditionModel");
  REQUIRE(info != nullptr);
  ComponentSpec spec;
  spec.name = "unet";
  spec.type = "UNet2DConditionModel";
  spec.from = kParity + "/models/tiny-sdxl";
  spec.subfolder = "unet";
  ComponentPtr c = info->create(spec);
  REQUIRE(std::dynamic_pointer_cast<UNet2DConditionModelImpl>(c));
  CHECK(c->type() == "UNet2DConditionModel");
  CHECK(c->nbytes() > 0);
}
