// image2image strength: the kept tail of the schedule matches diffusers' get_timesteps rule.
#include <catch2/catch.hpp>

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

  CHECK_THROWS_WITH(strength_timesteps(*ddim, 10, 0.0), Contains("strength must be in (0, 1], got 0"));
  CHECK_THROWS_WITH(strength_timesteps(*ddim, 10, 1.5), Contains("got 1.5"));
  CHECK_THROWS_AS(strength_timesteps(*ddim, 10, std::nan("")), InputError);
  CHECK_THROWS_WITH(strength_timesteps(*ddim, 3, 0.2), Contains("leaves no denoising step"));
}
