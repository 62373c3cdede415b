#include "tessera/plugin.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iterator>
#include <optional>
#include <system_error>

#include "tessera/plugin_abi.h"
#include "tessera/registry.h"
#include "tessera/version.h"

namespace tessera {

namespace fs = std::filesystem;

const char* engine_version_string() { return TESSERA_VERSION; }
const char* torch_version_string() { return TESSERA_TORCH_VERSION; }

namespace {

// Registrations made while a plugin registers are attributed to it, and the previous source comes back
// however registration ends, so a failing plugin cannot leave later registrations misattributed.
class SourceGuard {
 public:
  SourceGuard(Registry& registry, std::string source) : registry_(registry), saved_(registry.source()) {
    registry_.set_source(std::move(source));
  }
  ~SourceGuard() { registry_.set_source(saved_); }
  SourceGuard(const SourceGuard&) = delete;
  SourceGuard& operator=(const SourceGuard&) = delete;

 private:
  Registry& registry_;
  std::string saved_;
};

struct MajorMinor {
  int major = -1;
  int minor = -1;
};

// "1.13.0" → {1, 13}; anything else (null, "unknown", "1") → nullopt.
std::optional<MajorMinor> parse_major_minor(const char* version) {
  if (!version) return std::nullopt;
  MajorMinor mm;
  int consumed = 0;
  if (std::sscanf(version, "%d.%d%n", &mm.major, &mm.minor, &consumed) != 2 || consumed == 0) return std::nullopt;
  char next = version[consumed];
  if (next != '\0' && next != '.' && next != '+' && next != '-') return std::nullopt;
  return mm;
}

bool same_major_minor(const char* a, const char* b) {
  auto ma = parse_major_minor(a), mb = parse_major_minor(b);
  return ma && mb && ma->major == mb->major && ma->minor == mb->minor;
}

std::vector<std::string> added(const std::vector<std::string>& before, const std::vector<std::string>& after) {
  std::vector<std::string> out;  // both sorted: they come from the registry's std::maps
  std::set_difference(after.begin(), after.end(), before.begin(), before.end(), std::back_inserter(out));
  return out;
}

std::string in_quotes(const std::string& s) { return "'" + s + "'"; }

const char* const kMacroHint =
    "define the entry in one source file of the plugin with TESSERA_PLUGIN(\"name\", register_fn) from "
    "include/tessera/plugin_abi.h, where register_fn is void register_fn(tessera::Registry&)";

}  // namespace

LoadedPlugin load_plugin(const std::string& path, Registry& registry) {
  // Existence first: dlopen's "cannot open shared object file" does not say whether the file is missing
  // or one of its dependencies is.
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    std::string where = fs::path(path).is_relative() ? " (relative to the working directory " +
                                                           in_quotes(fs::current_path(ec).string()) + ")"
                                                     : "";
    throw PluginError("plugin file " + in_quotes(path) + " does not exist" + where, {}, {},
                      "check the path given in the recipe's `plugins:` list or to --plugin, and build the plugin "
                      "if it comes from source");
  }
  const std::string canonical = fs::canonical(path, ec).string();
  const std::string file = ec ? path : canonical;

  // RTLD_NOW: an unresolved symbol fails here, with a message, instead of crashing mid-run.
  // RTLD_LOCAL: two plugins' private symbols cannot interpose each other.
  void* handle = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char* why = dlerror();
    throw PluginError("cannot load plugin " + in_quotes(file) + ": " + (why ? why : "dlopen failed"), {}, {},
                      "the file must be a shared library for this platform linked against libtessera_engine; "
                      "an 'undefined symbol' error means it was built against another Tessera or LibTorch, so "
                      "rebuild it against this one");
  }
  // The handle is never closed: the registry keeps factories and vtables that point into the library.

  dlerror();  // clear any stale error so a null result below is this lookup's
  void* symbol = dlsym(handle, TESSERA_PLUGIN_ENTRY_SYMBOL);
  if (!symbol)
    throw PluginError(in_quotes(file) + " is not a Tessera plugin: it does not export the entry symbol '" +
                          TESSERA_PLUGIN_ENTRY_SYMBOL + "'",
                      {}, {}, kMacroHint);
  auto entry = reinterpret_cast<TesseraPluginEntryFn>(symbol);
  const TesseraPluginInfo* info = entry();
  if (!info)
    throw PluginError("plugin " + in_quotes(file) + ": " + TESSERA_PLUGIN_ENTRY_SYMBOL + "() returned no plugin info",
                      {}, {}, kMacroHint);

  // The ABI version decides the layout of everything after it, so no other field is read before it matches.
  if (info->abi_version != TESSERA_PLUGIN_ABI_VERSION)
    throw PluginError("plugin " + in_quotes(file) + " uses plugin ABI version " + std::to_string(info->abi_version) +
                          ", but this Tessera (" + TESSERA_VERSION + ") loads plugin ABI version " +
                          std::to_string(TESSERA_PLUGIN_ABI_VERSION),
                      {}, {}, "rebuild the plugin against the headers of Tessera " TESSERA_VERSION);

  auto require = [&](bool present, const char* what) {
    if (!present)
      throw PluginError("plugin " + in_quotes(file) + " declares no " + what + " in its plugin info", {}, {}, kMacroHint);
  };
  require(info->name != nullptr, "name");
  require(info->engine_version != nullptr, "engine version");
  require(info->torch_version != nullptr, "LibTorch version");
  require(info->register_fn != nullptr, "register function");

  LoadedPlugin loaded;
  loaded.path = file;
  loaded.name = info->name;
  loaded.engine_version = info->engine_version;
  loaded.torch_version = info->torch_version;
  const std::string label = "plugin " + in_quotes(loaded.name) + " (" + file + ")";

  // Classes cross the boundary by layout (Registry, BlockSpec, Value…), which may change between minor
  // engine versions; patch versions keep it.
  if (!same_major_minor(info->engine_version, TESSERA_VERSION))
    throw PluginError(label + " was built for Tessera " + loaded.engine_version + ", but this is Tessera " +
                          TESSERA_VERSION + "; a plugin's major.minor version must match the engine's",
                      {}, {}, "rebuild the plugin against Tessera " TESSERA_VERSION);
  // at::Tensor and friends cross the boundary too; LibTorch keeps its C++ ABI within a major.minor line.
  if (!same_major_minor(info->torch_version, TESSERA_TORCH_VERSION))
    throw PluginError(label + " was built against LibTorch " + loaded.torch_version +
                          ", but this Tessera uses LibTorch " + TESSERA_TORCH_VERSION +
                          "; their major.minor versions must match",
                      {}, {}, "rebuild the plugin against LibTorch " TESSERA_TORCH_VERSION);

  const auto blocks_before = registry.block_ids();
  const auto components_before = registry.component_types();
  const auto selectors_before = registry.selector_ids();
  char message[4096] = {0};
  int status = 0;
  {
    SourceGuard guard(registry, file);
    try {
      status = info->register_fn(&registry, message, sizeof message);
    } catch (...) {
      // register_fn must not throw; a hand-written one might, and this is the last place to catch it.
      status = -1;
      tessera_plugin_write_error(message, sizeof message, "its register function threw across the C boundary");
    }
  }
  if (status != 0) {
    // Undo a half-finished registration: only what this call added.
    registry.remove(added(blocks_before, registry.block_ids()), added(components_before, registry.component_types()),
                    added(selectors_before, registry.selector_ids()));
    message[sizeof message - 1] = '\0';
    std::string why = message[0] ? message : "it returned an error without a message";
    // Tessera errors thrown inside the plugin (a duplicate id) arrive formatted; this error says the kind already.
    const std::string own_kind = "PluginError: ";
    if (why.compare(0, own_kind.size(), own_kind) == 0) why.erase(0, own_kind.size());
    // A Tessera error from the registry (a duplicate id) already carries its own hint.
    std::string hint = why.find("hint:") != std::string::npos
                           ? std::string()
                           : "fix the plugin's register function (any exception it throws is reported here)";
    throw PluginError(label + " failed to register its types: " + why, {}, {}, hint);
  }

  loaded.block_ids = added(blocks_before, registry.block_ids());
  loaded.component_types = added(components_before, registry.component_types());
  loaded.selector_ids = added(selectors_before, registry.selector_ids());
  return loaded;
}

const LoadedPlugin& PluginLoader::load(const std::string& path) {
  if (const LoadedPlugin* known = find(path)) return *known;
  loaded_.push_back(load_plugin(path, registry_));
  return loaded_.back();
}

const LoadedPlugin* PluginLoader::find(const std::string& path) const {
  std::error_code ec;
  const std::string canonical = fs::canonical(path, ec).string();
  if (ec) return nullptr;
  for (const auto& p : loaded_)
    if (p.path == canonical) return &p;
  return nullptr;
}

}  // namespace tessera
