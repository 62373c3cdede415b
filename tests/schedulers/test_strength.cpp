// image2image strength: the kept tail of the schedule matches diffusers' get_timesteps rule.
#include <ATen/CPUGeneratorImpl.h>
#include <catch2/catch.hpp>

#include <cmath>

#include "schedulers/register.h"
#include "schedulers/strength.h"

using namespace tessera;
using Catch::Matchers::Contains;

TEST_CASE("strength keeps the tail of the schedule and rejects values outside (0, 1]", "[schedulers]") {
  auto ddim = make_scheduler("DDIMScheduler", nlohmann::json{{"steps_offset", 1}});
  ddim->set_timesteps(10);
  at::Tensor all = ddim->timesteps().clone();
  auto kept = strength_timesteps(*ddim, 10, 0.6);
  CHECK(kept.num_inference_steps == 6);
  CHECK(at::equal(kept.timesteps, all.slice(0, 4)));
  auto full = strength_timesteps(*ddim, 10, 1.0);
  CHECK(at::equal(full.timesteps, all));
  CHECK(full.num_inference_steps == 10);

  // Heun runs two calls per step: the begin index counts calls (order 2).
  auto heun = make_scheduler("HeunDiscreteScheduler", nlohmann::json::object());
  heun->set_timesteps(10);
  auto h = strength_timesteps(*heun, 10, 0.5);
  CHECK(h.num_inference_steps == 5);
  CHECK(h.timesteps.size(0) == heun->timesteps().size(0) - 5 * 2);
  CHECK(h.begin_index == 5 * 2);

  CHECK_THROWS_WITH(strength_timesteps(*ddim, 10, 0.0), Contains("strength must be in (0, 1], got 0"));
  CHECK_THROWS_WITH(strength_timesteps(*ddim, 10, 1.5), Contains("got 1.5"));
  CHECK_THROWS_AS(strength_timesteps(*ddim, 10, std::nan("")), InputError);
  CHECK_THROWS_WITH(strength_timesteps(*ddim, 3, 0.2), Contains("leaves no denoising step"));
}

TEST_CASE("every scheduler steps through an image2image tail (begin index > 0)", "[schedulers]") {
  // Multistep schedulers then start with less history than their order (LMS used to read past its
  // derivatives here and crash).
  for (const auto& name : builtin_scheduler_names()) {
    INFO(name);
    auto s = make_scheduler(name, nlohmann::json::object());
    if (name.find("FlowMatch") != std::string::npos) continue;  // no add_noise / strength path for flow matching
    s->set_timesteps(10);
    auto kept = strength_timesteps(*s, 10, 0.5);
    auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
    at::Tensor x = s->add_noise(at::randn({1, 4, 8, 8}, gen), at::randn({1, 4, 8, 8}, gen), kept.timesteps.slice(0, 0, 1));
    for (int64_t i = 0; i < kept.timesteps.size(0); ++i) {
      const double t = kept.timesteps[i].item<double>();
      at::Tensor in = s->scale_model_input(x, t);
      x = s->step(at::randn(in.sizes(), gen) * 0.1, t, x, gen).prev_sample;
    }
    CHECK(at::isfinite(x).all().item<bool>());
  }
}

TEST_CASE("flow-matching strength keeps int(n - n*strength) as the FLUX and SD3 img2img pipelines", "[schedulers]") {
  auto flow = make_scheduler("FlowMatchEulerDiscreteScheduler", nlohmann::json{{"shift", 3.0}});
  flow->set_timesteps(5);
  at::Tensor all = flow->timesteps().clone();
  // 5 steps at 0.7: t_start = int(5 - 3.5) = 1 → 4 steps (SD's rule would keep int(3.5) = 3).
  auto kept = flow_strength_timesteps(*flow, 5, 0.7);
  CHECK(kept.num_inference_steps == 4);
  CHECK(kept.begin_index == 1);
  CHECK(at::equal(kept.timesteps, all.slice(0, 1)));
  flow->set_timesteps(5);
  CHECK(strength_timesteps(*flow, 5, 0.7).num_inference_steps == 3);
  flow->set_timesteps(10);
  CHECK(flow_strength_timesteps(*flow, 10, 0.01).num_inference_steps == 1);  // never zero steps for strength > 0
  CHECK(flow_strength_timesteps(*flow, 10, 1.0).num_inference_steps == 10);
  CHECK_THROWS_WITH(flow_strength_timesteps(*flow, 10, 0.0), Contains("strength must be in (0, 1]"));
}
