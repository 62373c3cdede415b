#pragma once
/// Loading plugins: shared libraries that register block, component and selector types into a Registry
/// through the C handshake of include/tessera/plugin_abi.h. Libraries are opened RTLD_NOW | RTLD_LOCAL (missing
/// symbols fail at load, not mid-run; two plugins' internal symbols never collide) and never unloaded,
/// because the registry keeps factories and vtables that point into them.
///
///   PluginLoader plugins(registry);
///   plugins.load("./libmyblocks.so");   // PluginError on any problem; a second load of the file is a no-op
#include <deque>
#include <string>
#include <vector>

#include <tessera/error.h>

namespace tessera {

class Registry;

/// A plugin that registered successfully, and what it registered.
struct LoadedPlugin {
  std::string path;            ///< canonical path of the library; also the `source` of its registrations
  std::string name;            ///< as the plugin declares it
  std::string engine_version;  ///< Tessera version the plugin was built against
  std::string torch_version;   ///< LibTorch version the plugin was built against
  std::vector<std::string> block_ids;        ///< sorted
  std::vector<std::string> component_types;  ///< sorted
  std::vector<std::string> selector_ids;     ///< sorted
};

/// Opens the plugin at `path`, checks its handshake and runs its registration into `registry`, with
/// registry.source() set to the plugin's canonical path meanwhile (so duplicate-id errors name it).
/// Keeps no record: calling it twice for one file registers twice (a duplicate-id error); use PluginLoader.
/// Throws PluginError naming the file and the fix: missing file, dlopen failure, missing entry symbol,
/// ABI / engine / LibTorch version mismatch, registration failure. When registration fails part-way,
/// the block and component types it added before the failure are removed again.
LoadedPlugin load_plugin(const std::string& path, Registry& registry);

/// The engine's own versions, as a plugin's handshake is compared with them.
const char* engine_version_string();  ///< TESSERA_VERSION, e.g. "0.1.0"
const char* torch_version_string();   ///< LibTorch the engine was built against, e.g. "1.13.0"

/// Loads plugins into one registry and remembers them: loading a file again (by canonical path) is a
/// no-op that returns the first record. Not thread-safe; the registry must outlive the loader.
class PluginLoader {
 public:
  explicit PluginLoader(Registry& registry) : registry_(registry) {}

  /// Loads `path` (see load_plugin) unless it is already loaded; returns its record either way.
  /// Records stay valid (and at the same address) for the loader's lifetime.
  const LoadedPlugin& load(const std::string& path);
  /// The record of an already loaded plugin by any path to it, or nullptr.
  const LoadedPlugin* find(const std::string& path) const;
  /// Loaded plugins in load order.
  const std::deque<LoadedPlugin>& loaded() const { return loaded_; }

 private:
  Registry& registry_;
  std::deque<LoadedPlugin> loaded_;  // a deque so that load() can hand out stable references
};

}  // namespace tessera
