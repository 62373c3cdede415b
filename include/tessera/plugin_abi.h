#pragma once
/// The plugin handshake, as plain C so the layout is fixed by the platform ABI rather than by a compiler:
/// a plugin exports one `extern "C"` function, `tessera_plugin_entry`, returning a TesseraPluginInfo.
/// The loader (include/tessera/plugin.h) reads `abi_version` first and nothing else until it matches, so a later
/// ABI may change every other field. Plugin authors use the C++ macro at the end:
///
///   #include <tessera/plugin_abi.h>
///   #include <tessera/registry.h>
///   static void register_my_blocks(tessera::Registry& r) { tessera::add_block_type<MyStep>(r, "my.step", "…"); }
///   TESSERA_PLUGIN("my_blocks", register_my_blocks)
///
/// This header is deliberately light (no LibTorch headers beyond torch/version.h) so that it costs nothing to include.
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <tessera/version.h>

#ifndef TESSERA_PLUGIN_ABI_VERSION
/// Normally a compile definition of tessera_engine (CMake's TESSERA_PLUGIN_ABI_VERSION); this fallback keeps
/// the header usable when a plugin is built without the CMake target. Bump it whenever TesseraPluginInfo,
/// the register_fn contract or the Registry's layout changes incompatibly.
#define TESSERA_PLUGIN_ABI_VERSION 2
#endif

/// Name of the entry symbol, for dlsym and error messages; TESSERA_PLUGIN defines a function by this name.
#define TESSERA_PLUGIN_ENTRY_SYMBOL "tessera_plugin_entry"

/// The LibTorch version the including code is compiled against ("1.13.0"). Plugins and the engine must
/// agree on it, because blocks pass at::Tensor and other C++ types across the boundary.
#if defined(__has_include)
#if __has_include(<torch/version.h>)
#include <torch/version.h>
#endif
#endif
#if defined(TORCH_VERSION)
#define TESSERA_TORCH_VERSION TORCH_VERSION
#elif defined(TORCH_VERSION_MAJOR) && defined(TORCH_VERSION_MINOR) && defined(TORCH_VERSION_PATCH)
#define TESSERA_TORCH_VERSION_STR2_(x) #x
#define TESSERA_TORCH_VERSION_STR_(x) TESSERA_TORCH_VERSION_STR2_(x)
#define TESSERA_TORCH_VERSION                                                                     \
  TESSERA_TORCH_VERSION_STR_(TORCH_VERSION_MAJOR) "." TESSERA_TORCH_VERSION_STR_(TORCH_VERSION_MINOR) "." \
      TESSERA_TORCH_VERSION_STR_(TORCH_VERSION_PATCH)
#else
#define TESSERA_TORCH_VERSION "unknown"
#endif

/// Marks the entry as exported even when a plugin builds with -fvisibility=hidden.
#if defined(_WIN32)
#define TESSERA_PLUGIN_EXPORT __declspec(dllexport)
#else
#define TESSERA_PLUGIN_EXPORT __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/// What a plugin tells the loader about itself. Static storage in the plugin; the loader never frees it.
typedef struct TesseraPluginInfo {
  /// TESSERA_PLUGIN_ABI_VERSION the plugin was built with. FIRST field, checked before anything else.
  uint32_t abi_version;
  /// Short name for listings and errors ("my_blocks").
  const char* name;
  /// TESSERA_VERSION the plugin was built against ("0.1.0"); major.minor must match the engine's.
  const char* engine_version;
  /// TESSERA_TORCH_VERSION the plugin was built against ("1.13.0"); major.minor must match the engine's.
  const char* torch_version;
  /// Registers the plugin's types into `registry` (a tessera::Registry*). Returns 0 on success; otherwise
  /// non-zero with a NUL-terminated message in `error_buffer`. Must not throw: no C++ exception may
  /// cross this boundary.
  int (*register_fn)(void* registry, char* error_buffer, size_t error_buffer_size);
} TesseraPluginInfo;

/// Type of the entry function the loader looks up by TESSERA_PLUGIN_ENTRY_SYMBOL.
typedef const TesseraPluginInfo* (*TesseraPluginEntryFn)(void);

/// The entry every plugin defines (TESSERA_PLUGIN does it); declared here so a hand-written one must match.
TESSERA_PLUGIN_EXPORT const TesseraPluginInfo* tessera_plugin_entry(void);

/// Copies `message` into the register_fn error buffer, truncating, always NUL-terminated.
static inline void tessera_plugin_write_error(char* buffer, size_t size, const char* message) {
  if (buffer == NULL || size == 0) return;
  snprintf(buffer, size, "%s", message != NULL ? message : "(no message)");
}

#ifdef __cplusplus
}  // extern "C"

#include <exception>

namespace tessera {

class Registry;

namespace plugin_detail {
/// Adapts `void register(tessera::Registry&)` to register_fn: exceptions become a message and a non-zero return.
template <void (*Register)(Registry&)>
int register_thunk(void* registry, char* error_buffer, size_t error_buffer_size) noexcept {
  try {
    Register(*static_cast<Registry*>(registry));
    return 0;
  } catch (const std::exception& e) {
    tessera_plugin_write_error(error_buffer, error_buffer_size, e.what());
  } catch (...) {
    tessera_plugin_write_error(error_buffer, error_buffer_size, "an exception not derived from std::exception");
  }
  return 1;
}
}  // namespace plugin_detail
}  // namespace tessera

/// Defines the plugin's entry symbol. Use once per plugin, at namespace scope, in one source file:
///   TESSERA_PLUGIN("my_blocks", register_my_blocks)   // void register_my_blocks(tessera::Registry&)
/// The versions recorded are those of the headers this file is compiled against, which is what the
/// loader must compare with its own.
#define TESSERA_PLUGIN(plugin_name, register_function)                                                  \
  extern "C" TESSERA_PLUGIN_EXPORT const TesseraPluginInfo* tessera_plugin_entry(void) {               \
    static const TesseraPluginInfo info = {TESSERA_PLUGIN_ABI_VERSION, plugin_name, TESSERA_VERSION,    \
                                           TESSERA_TORCH_VERSION,                                      \
                                           &::tessera::plugin_detail::register_thunk<register_function>}; \
    return &info;                                                                                      \
  }

#endif  // __cplusplus
