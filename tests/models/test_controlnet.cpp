// ControlNetModel on the tiny ControlNets, and the UNet's residual inputs. (Parity with diffusers' ControlNet
// residuals and the UNet's noise prediction with them is in the manifest_control cases, run by tests/blocks.)
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include "engine/error.h"
#include "models/controlnets/controlnet_model.h"
#include "models/unet/unet_2d_condition.h"

using namespace tessera;

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
