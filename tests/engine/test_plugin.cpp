// Plugin loading: the sample plugin's blocks run, and every loader error names the file and the fix.
// The plugin libraries are built by tests/plugins/tests.cmake, which passes their paths in as macros.
#include <catch2/catch.hpp>

#include <filesystem>

#include "tessera/block.h"
#include "tessera/components.h"
#include "tessera/plugin.h"
#include "tessera/plugin_abi.h"
#include "tessera/registry.h"

#if !defined(TESSERA_SAMPLE_PLUGIN) || !defined(TESSERA_BAD_ABI_PLUGIN)
#error "test_plugin.cpp needs the plugin paths from tests/plugins/tests.cmake (tessera_wire_test_plugins)"
#endif

using namespace tessera;
using Catch::Matchers::Contains;

namespace {

std::string canonical(const char* path) { return std::filesystem::canonical(path).string(); }

// The PluginError a call throws (fails the test when it throws nothing or something else).
template <typename F>
PluginError plugin_error(F&& f) {
  try {
    f();
  } catch (const PluginError& e) {
    return e;
  }
  FAIL("expected a PluginError");
  throw std::logic_error("unreachable");
}

}  // namespace

TEST_CASE("the sample plugin registers blocks that run", "[engine][plugin]") {
  Registry registry;
  PluginLoader loader(registry);
  const LoadedPlugin& plugin = loader.load(TESSERA_SAMPLE_PLUGIN);

  CHECK(plugin.name == "sample");
  CHECK(plugin.path == canonical(TESSERA_SAMPLE_PLUGIN));
  CHECK(plugin.engine_version == engine_version_string());
  CHECK(plugin.torch_version == torch_version_string());
  CHECK(plugin.block_ids == std::vector<std::string>{"sample.affine", "sample.clamp_tensor", "sample.scale_latents"});
  CHECK(plugin.component_types.empty());
  REQUIRE(registry.find_block("sample.affine") != nullptr);
  CHECK(registry.find_block("sample.affine")->source == plugin.path);
  CHECK(registry.source() == "builtin");  // restored after registering

  Components comps(registry, nullptr);
  ExecContext ctx;
  ctx.components = &comps;
  PipelineState state;
  state.set("x", at::tensor({-1.0f, 0.5f, 2.0f}));

  auto affine = registry.create_block("sample.affine", {{"a", Value(2.0)}, {"b", Value(1)}});
  affine->execute(ctx, state, "affine");
  CHECK(at::allclose(state.get("y").tensor(), at::tensor({-1.0f, 2.0f, 5.0f})));

  auto clamp = registry.create_block("sample.clamp_tensor", {});  // defaults: [0, 1]
  clamp->execute(ctx, state, "clamp");
  CHECK(at::allclose(state.get("x").tensor(), at::tensor({0.0f, 0.5f, 1.0f})));

  REQUIRE_THROWS_WITH(registry.create_block("sample.clamp_tensor", {{"min", Value(2.0)}, {"max", Value(1.0)}}),
                      Contains("min (2.0") && Contains("above max"));
}

TEST_CASE("loading a plugin twice is a no-op", "[engine][plugin]") {
  Registry registry;
  PluginLoader loader(registry);
  const LoadedPlugin& first = loader.load(TESSERA_SAMPLE_PLUGIN);
  auto ids = registry.block_ids();

  // Another spelling of the same file: the canonical path decides.
  auto other_spelling = (std::filesystem::path(TESSERA_SAMPLE_PLUGIN).parent_path() / "." /
                         std::filesystem::path(TESSERA_SAMPLE_PLUGIN).filename()).string();
  const LoadedPlugin& again = loader.load(other_spelling);
  CHECK(&again == &first);
  CHECK(loader.loaded().size() == 1);
  CHECK(registry.block_ids() == ids);
  CHECK(loader.find(TESSERA_SAMPLE_PLUGIN) == &first);
  CHECK(loader.find(TESSERA_DUPLICATE_PLUGIN) == nullptr);

  // Another registry gets its own registrations from the already opened library.
  Registry other;
  PluginLoader other_loader(other);
  CHECK(other_loader.load(TESSERA_SAMPLE_PLUGIN).block_ids.size() == 3);
}

TEST_CASE("a missing plugin file is reported as missing", "[engine][plugin]") {
  Registry registry;
  auto e = plugin_error([&] { load_plugin("/nonexistent/libnope.so", registry); });
  CHECK(e.code() == ExitCode::Plugin);
  REQUIRE_THAT(e.what(), Contains("/nonexistent/libnope.so") && Contains("does not exist"));
  REQUIRE_THAT(e.hint(), Contains("--plugin"));

  auto rel = plugin_error([&] { load_plugin("libnope.so", registry); });
  REQUIRE_THAT(rel.what(), Contains("relative to the working directory"));
}

TEST_CASE("a file that is not a shared library fails in dlopen", "[engine][plugin]") {
  Registry registry;
  auto e = plugin_error([&] { load_plugin(TESSERA_SOURCE_DIR "/tests/plugins/bad_plugin.cpp", registry); });
  REQUIRE_THAT(e.what(), Contains("cannot load plugin") && Contains("bad_plugin.cpp"));
}

TEST_CASE("a library without the entry symbol names the symbol and the macro", "[engine][plugin]") {
  Registry registry;
  auto e = plugin_error([&] { load_plugin(TESSERA_BAD_NO_ENTRY_PLUGIN, registry); });
  REQUIRE_THAT(e.what(), Contains(canonical(TESSERA_BAD_NO_ENTRY_PLUGIN)) && Contains("not a Tessera plugin") &&
                             Contains(TESSERA_PLUGIN_ENTRY_SYMBOL) && Contains("TESSERA_PLUGIN("));
}

TEST_CASE("an entry returning no info is refused", "[engine][plugin]") {
  Registry registry;
  auto e = plugin_error([&] { load_plugin(TESSERA_BAD_NULL_INFO_PLUGIN, registry); });
  REQUIRE_THAT(e.what(), Contains("returned no plugin info"));
}

TEST_CASE("an ABI mismatch names both versions before reading anything else", "[engine][plugin]") {
  // The plugin's other fields are null: reading them before the ABI check would crash here.
  Registry registry;
  auto e = plugin_error([&] { load_plugin(TESSERA_BAD_ABI_PLUGIN, registry); });
  REQUIRE_THAT(e.what(), Contains(canonical(TESSERA_BAD_ABI_PLUGIN)) && Contains("ABI version 999") &&
                             Contains("ABI version " + std::to_string(TESSERA_PLUGIN_ABI_VERSION)) &&
                             Contains("rebuild"));
}

TEST_CASE("an engine version mismatch names both versions", "[engine][plugin]") {
  Registry registry;
  auto e = plugin_error([&] { load_plugin(TESSERA_BAD_ENGINE_VERSION_PLUGIN, registry); });
  REQUIRE_THAT(e.what(), Contains("bad_engine_version") && Contains("Tessera 99.7.0") &&
                             Contains(std::string("Tessera ") + engine_version_string()) && Contains("rebuild"));
  CHECK(registry.block_ids().empty());
}

TEST_CASE("a LibTorch version mismatch names both versions", "[engine][plugin]") {
  Registry registry;
  auto e = plugin_error([&] { load_plugin(TESSERA_BAD_TORCH_VERSION_PLUGIN, registry); });
  REQUIRE_THAT(e.what(), Contains("LibTorch 0.4.1") && Contains(std::string("LibTorch ") + torch_version_string()));
}

TEST_CASE("an exception in register becomes the error message", "[engine][plugin]") {
  Registry registry;
  PluginLoader loader(registry);
  auto e = plugin_error([&] { loader.load(TESSERA_BAD_THROWS_PLUGIN); });
  REQUIRE_THAT(e.what(), Contains("plugin 'throws'") && Contains("failed to register") &&
                             Contains("the sample cannot find its weights file"));
  CHECK(loader.loaded().empty());
  CHECK(registry.source() == "builtin");  // restored on failure too
}

TEST_CASE("a duplicate id names both plugin files", "[engine][plugin]") {
  Registry registry;
  PluginLoader loader(registry);
  loader.load(TESSERA_SAMPLE_PLUGIN);
  auto e = plugin_error([&] { loader.load(TESSERA_DUPLICATE_PLUGIN); });
  REQUIRE_THAT(e.what(), Contains("'sample.affine' is registered twice") &&
                             Contains("first by " + canonical(TESSERA_SAMPLE_PLUGIN)) &&
                             Contains("again by " + canonical(TESSERA_DUPLICATE_PLUGIN)));
  CHECK(registry.find_block("sample.affine")->source == canonical(TESSERA_SAMPLE_PLUGIN));
  CHECK(registry.find_block("duplicate.first") == nullptr);  // the half-finished registration was undone
  CHECK(registry.find_selector("duplicate.first_selector") == nullptr);
  CHECK(registry.source() == "builtin");
  CHECK(loader.loaded().size() == 1);
}
