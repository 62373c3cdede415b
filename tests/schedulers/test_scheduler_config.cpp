// Scheduler configuration: diffusers' defaults, mistyped fields, unknown names, bad step counts, registry wiring.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include "schedulers/flow_match_euler_discrete.h"
#include "schedulers/register.h"

using namespace tessera;
using nlohmann::json;

namespace {
std::string error_text(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("make_scheduler applies diffusers defaults", "[schedulers]") {
  auto ddim = make_scheduler("DDIMScheduler", json::object());
  CHECK(ddim->type() == "DDIMScheduler");
  CHECK(ddim->num_train_timesteps() == 1000);
  CHECK(ddim->order() == 1);
  ddim->set_timesteps(10);
  // leading spacing, steps_offset 0: 900, 800, …, 0
  CHECK(ddim->timesteps().scalar_type() == at::kLong);
  CHECK(ddim->timestep_at(0) == 900);
  CHECK(ddim->timestep_at(9) == 0);

  auto euler = make_scheduler("EulerDiscreteScheduler", json{{"num_train_timesteps", 500}});
  euler->set_timesteps(5);
  CHECK(euler->timesteps().scalar_type() == at::kFloat);
  CHECK(euler->timestep_at(0) == 499);
  CHECK(euler->sigmas().size(0) == 6);
  CHECK(euler->init_noise_sigma() == Approx(euler->sigmas()[0].item<float>()));
}

TEST_CASE("num_inference_steps out of range is a clear error", "[schedulers]") {
  for (const auto& name : builtin_scheduler_names()) {
    auto s = make_scheduler(name, json{{"num_train_timesteps", 100}});
    INFO(name);
    CHECK_THROWS_AS(s->set_timesteps(0), ValidationError);
    CHECK_THROWS_AS(s->set_timesteps(-3), ValidationError);
    CHECK(error_text([&] { s->set_timesteps(101); }).find("num_train_timesteps") != std::string::npos);
    // LCM cannot take more steps than its original_inference_steps (50).
    CHECK_NOTHROW(s->set_timesteps(name == "LCMScheduler" ? 50 : 100));
  }
}

TEST_CASE("unknown scheduler names suggest the closest one", "[schedulers]") {
  std::string msg = error_text([] { make_scheduler("EulerDiscreteSchedular", json::object()); });
  CHECK(msg.find("unknown scheduler 'EulerDiscreteSchedular'") != std::string::npos);
  CHECK(msg.find("EulerDiscreteScheduler") != std::string::npos);
  CHECK_THROWS_AS(make_scheduler("NoSuchThing", json::object()), ValidationError);
}

TEST_CASE("mistyped config fields name the field and the file", "[schedulers]") {
  std::string msg = error_text([] { make_scheduler("DDIMScheduler", json{{"beta_start", "0.1"}}, "x/scheduler_config.json"); });
  CHECK(msg.find("beta_start") != std::string::npos);
  CHECK(msg.find("x/scheduler_config.json") != std::string::npos);
  CHECK_THROWS_AS(make_scheduler("DDIMScheduler", json{{"num_train_timesteps", 10.5}}), ValidationError);
  CHECK_THROWS_AS(make_scheduler("DDIMScheduler", json{{"clip_sample", 1}}), ValidationError);
  msg = error_text([] { make_scheduler("DDIMScheduler", json{{"prediction_type", "epsilom"}}); });
  CHECK(msg.find("prediction_type") != std::string::npos);
  CHECK(msg.find("epsilon") != std::string::npos);
  CHECK_THROWS_AS(make_scheduler("DDIMScheduler", json{{"timestep_spacing", "middle"}}), ValidationError);
  CHECK_THROWS_AS(make_scheduler("DDIMScheduler", json{{"trained_betas", {0.1, 0.2}}}), ValidationError);
  CHECK_THROWS_AS(make_scheduler("DDIMScheduler", json::array()), ValidationError);
}

TEST_CASE("fields diffusers ignores are accepted (logged)", "[schedulers]") {
  // Real configs carry fields of other classes (clip_sample in an Euler config) and _class_name.
  CHECK_NOTHROW(make_scheduler("EulerDiscreteScheduler",
                               json{{"_class_name", "PNDMScheduler"}, {"clip_sample", false}, {"skip_prk_steps", true}}));
}

TEST_CASE("a field of another scheduler class is not a warning; a field no scheduler has is", "[schedulers]") {
  // The default logger, captured at warning level (what a user sees without -v).
  std::ostringstream out;
  auto previous = spdlog::default_logger();
  auto capture = std::make_shared<spdlog::logger>("capture", std::make_shared<spdlog::sinks::ostream_sink_mt>(out));
  capture->set_level(spdlog::level::warn);
  spdlog::set_default_logger(capture);
  // tiny-sd's scheduler_config.json is PNDM's: skip_prk_steps under DDIM, clip_sample under Euler.
  make_scheduler("DDIMScheduler", json{{"_class_name", "PNDMScheduler"}, {"skip_prk_steps", true}}, "a.json");
  make_scheduler("EulerDiscreteScheduler", json{{"clip_sample", false}, {"set_alpha_to_one", false}}, "b.json");
  const std::string quiet = out.str();
  make_scheduler("DDIMScheduler", json{{"beta_strat", 0.1}}, "c.json");
  const std::string warned = out.str();
  spdlog::set_default_logger(previous);
  CHECK(quiet.empty());
  CHECK_THAT(warned, Catch::Matchers::Contains("c.json") && Catch::Matchers::Contains("'beta_strat'") &&
                         Catch::Matchers::Contains("beta_start"));
}

TEST_CASE("JSON with NaN/Infinity literals parses", "[schedulers]") {
  json j = parse_json_lenient(R"({"a": -Infinity, "b": "NaN in a string", "c": Infinity, "d": NaN})");
  CHECK(j["a"] == "-Infinity");
  CHECK(j["b"] == "NaN in a string");
  CHECK(j["c"] == "Infinity");
  CHECK_THROWS_AS(parse_json_lenient("{oops"), ValidationError);
}

TEST_CASE("schedulers are registered component types, from config or from a folder", "[schedulers]") {
  Registry r;
  register_builtin_schedulers(r);
  auto types = r.component_types(ComponentCategory::Scheduler);
  CHECK(std::find(types.begin(), types.end(), "DDIMScheduler") != types.end());

  ComponentSpec spec;
  spec.name = "scheduler";
  spec.type = "DDIMScheduler";
  spec.creation = Creation::FromConfig;
  spec.config = Value(ValueMap{{"steps_offset", Value(1)}, {"timestep_spacing", Value("trailing")}});
  auto s = std::dynamic_pointer_cast<Scheduler>(r.create_component(spec));
  REQUIRE(s);
  s->set_timesteps(10);
  CHECK(s->timestep_at(0) == 999);

  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("tessera_sched_" + std::to_string(::getpid()));
  fs::create_directories(dir / "scheduler");
  std::ofstream(dir / "scheduler" / "scheduler_config.json")
      << R"({"_class_name": "DDIMScheduler", "steps_offset": 1, "lambda_min_clipped": -Infinity})";
  ComponentSpec from;
  from.name = "scheduler";
  from.type = "EulerDiscreteScheduler";
  from.from = dir.string();
  from.subfolder = "scheduler";
  from.config = Value(ValueMap{{"timestep_spacing", Value("leading")}});
  auto e = std::dynamic_pointer_cast<Scheduler>(r.create_component(from));
  REQUIRE(e);
  e->set_timesteps(10);
  CHECK(e->timestep_at(0) == 901);  // leading + steps_offset from the file

  from.subfolder = "missing";
  CHECK_THROWS_AS(r.create_component(from), ModelLoadError);
  fs::remove_all(dir);
}

TEST_CASE("FlowMatchEulerDiscreteScheduler takes FLUX's custom sigmas and exposes the shift parameters", "[schedulers]") {
  nlohmann::json cfg{{"use_dynamic_shifting", true}, {"base_shift", 0.5}, {"max_shift", 1.15},
                     {"base_image_seq_len", 256}, {"max_image_seq_len", 4096}};
  auto s = make_scheduler("FlowMatchEulerDiscreteScheduler", cfg);
  auto* flow = dynamic_cast<FlowMatchEulerDiscreteScheduler*>(s.get());
  REQUIRE(flow);
  CHECK(flow->use_dynamic_shifting());
  CHECK(flow->max_shift() == 1.15);
  CHECK(flow->max_image_seq_len() == 4096);
  const double mu = 0.8;
  SetTimestepsOptions o;
  o.mu = mu;
  o.sigmas = std::vector<double>{1.0, 0.75, 0.5, 0.25};  // linspace(1, 1/n, n), n = 4
  flow->set_timesteps(99, o);                              // the step count comes from the sigmas
  REQUIRE(flow->timesteps().size(0) == 4);
  REQUIRE(flow->sigmas().size(0) == 5);
  for (int k = 0; k < 4; ++k) {
    const double x = (*o.sigmas)[k];
    const double expected = std::exp(mu) / (std::exp(mu) + (1.0 / x - 1.0));  // exponential time shift
    CHECK(flow->sigmas()[k].item<double>() == Approx(expected).epsilon(1e-6));
    CHECK(flow->timesteps()[k].item<double>() == Approx(expected * 1000).epsilon(1e-6));
  }
  CHECK(flow->sigmas()[4].item<double>() == 0.0);
  o.sigmas = std::vector<double>{1.0, 0.0};
  CHECK_THROWS_WITH(flow->set_timesteps(2, o), Catch::Matchers::Contains("(0, 1]"));
  auto ddim = make_scheduler("DDIMScheduler", nlohmann::json::object());
  SetTimestepsOptions only_sigmas;
  only_sigmas.sigmas = std::vector<double>{1.0, 0.5};
  CHECK_THROWS_WITH(ddim->set_timesteps(2, only_sigmas), Catch::Matchers::Contains("takes no custom sigmas"));
}
