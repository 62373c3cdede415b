// The concurrency contract of include/tessera/components.h: a component loads once when two threads first ask for it at
// the same time; models are shared between pipelines on one manager, schedulers are per pipeline; two pipelines
// run at the same time on one manager and draw what they draw alone.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <thread>

#include <tessera/builtins.h>

#include "tessera/components.h"
#include "tessera/error.h"
#include "tessera/pipeline.h"
#include "tessera/recipe.h"
#include "tessera/registry.h"

using namespace tessera;

namespace {

struct Dummy : Component {
  std::string type() const override { return "Dummy"; }
};

const std::string kSource = TESSERA_SOURCE_DIR;

size_t count_keys(const ComponentsManager& m, const std::string& part) {
  auto keys = m.loaded_keys();
  return static_cast<size_t>(std::count_if(keys.begin(), keys.end(),
                                           [&](const std::string& k) { return k.find(part) != std::string::npos; }));
}

}  // namespace

TEST_CASE("ComponentsManager: two threads asking for one component at once load it once", "[api][threads]") {
  ComponentsManager m;
  std::atomic<int> makes{0};
  auto slow = [&]() -> ComponentPtr {
    ++makes;
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    return std::make_shared<Dummy>();
  };
  ComponentPtr a, b;
  std::thread t1([&] { a = m.get_or_create("k", slow); });
  std::thread t2([&] { b = m.get_or_create("k", slow); });
  t1.join();
  t2.join();
  CHECK(makes == 1);
  CHECK(a == b);
  CHECK(m.creations() == 1);

  // Different keys do not wait for each other's load: each is created once, as its own object.
  ComponentPtr c, d;
  std::thread t3([&] { c = m.get_or_create("k2", slow); });
  std::thread t4([&] { d = m.get_or_create("k3", slow); });
  t3.join();
  t4.join();
  CHECK(makes == 3);
  CHECK(c != d);
}

TEST_CASE("ComponentsManager: a failed load reaches every waiting caller, and the next call tries again",
          "[api][threads]") {
  ComponentsManager m;
  std::atomic<int> makes{0};
  auto failing = [&]() -> ComponentPtr {
    ++makes;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    throw ModelLoadError("cannot read 'weights.safetensors'");
  };
  std::atomic<int> errors{0};
  auto call = [&] {
    try {
      m.get_or_create("k", failing);
    } catch (const ModelLoadError& e) {
      if (std::string(e.what()).find("weights.safetensors") != std::string::npos) ++errors;
    }
  };
  std::thread t1(call), t2(call);
  t1.join();
  t2.join();
  CHECK(errors == 2);
  CHECK(makes >= 1);
  CHECK(makes <= 2);  // the second caller either waited for the first's failure or came after it
  CHECK_FALSE(m.is_loaded("k"));
  CHECK(m.get_or_create("k", [] { return std::make_shared<Dummy>(); }) != nullptr);
  CHECK(m.is_loaded("k"));
}

TEST_CASE("Two tiny-sd pipelines on one manager run at the same time and share the models, not the schedulers",
          "[api][threads]") {
  Registry registry;
  register_builtins(registry);
  auto manager = std::make_shared<ComponentsManager>();
  BuildOptions options;
  options.manager = manager;
  const Recipe recipe = load_recipe(kSource + "/recipes/sd/auto.yaml");
  auto p1 = Pipeline::from_recipe(recipe, registry, options);
  auto p2 = Pipeline::from_recipe(recipe, registry, options);
  auto inputs = [](const char* prompt, int64_t seed) {
    return ValueMap{{"prompt", Value(std::string(prompt))},
                    {"seed", Value(seed)},
                    {"num_inference_steps", Value(int64_t{4})}};
  };
  // Alone, one after the other, on a manager of their own.
  at::Tensor alone1, alone2;
  {
    auto q = Pipeline::from_recipe(recipe, registry);
    alone1 = q->run(inputs("a red circle", 1)).get("images").images().pixels;
    alone2 = q->run(inputs("a blue square", 2)).get("images").images().pixels;
  }
  // Each thread runs its pipeline and keeps its own result or error (no shared writes).
  struct Run {
    at::Tensor images;
    std::string error;
  };
  auto run_on = [&](Pipeline& p, const char* prompt, int64_t seed, Run& out) {
    try {
      out.images = p.run(inputs(prompt, seed)).get("images").images().pixels;
    } catch (const std::exception& e) {
      out.error = e.what();
    }
  };
  Run r1, r2;
  std::thread t1(run_on, std::ref(*p1), "a red circle", int64_t{1}, std::ref(r1));
  std::thread t2(run_on, std::ref(*p2), "a blue square", int64_t{2}, std::ref(r2));
  t1.join();
  t2.join();
  REQUIRE(r1.error.empty());
  REQUIRE(r2.error.empty());
  CHECK(at::equal(r1.images, alone1));
  CHECK(at::equal(r2.images, alone2));
  CHECK(count_keys(*manager, "UNet2DConditionModel") == 1);
  CHECK(count_keys(*manager, "CLIPTextModel") == 1);
  CHECK(count_keys(*manager, "AutoencoderKL") == 1);
  CHECK(count_keys(*manager, "Scheduler") == 2);  // one per pipeline

  // A pipeline's own components leave the manager with it; the shared models stay for the other.
  p2.reset();
  CHECK(count_keys(*manager, "Scheduler") == 1);
  CHECK(count_keys(*manager, "UNet2DConditionModel") == 1);
}
