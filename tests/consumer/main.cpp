// Embeds the engine through the installed package: the built-ins in one call, the demo recipe run.
#include <cstdio>

#include <tessera/builtins.h>

#include <tessera/pipeline.h>
#include <tessera/registry.h>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: consumer RECIPE\n");
    return 2;
  }
  try {
    tessera::Registry registry;
    tessera::register_builtins(registry);
    auto pipe = tessera::Pipeline::from_recipe(tessera::load_recipe(argv[1]), registry);
    pipe->validate();
    auto state = pipe->run({{"num_inference_steps", tessera::Value(int64_t{3})}});
    const auto& images = state.get("images").images().pixels;
    std::printf("images %lld x %lld x %lld x %lld\n", static_cast<long long>(images.size(0)),
                static_cast<long long>(images.size(1)), static_cast<long long>(images.size(2)),
                static_cast<long long>(images.size(3)));
    return images.dim() == 4 ? 0 : 1;
  } catch (const tessera::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return static_cast<int>(e.code());
  }
}
