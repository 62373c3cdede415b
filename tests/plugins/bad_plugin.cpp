// Deliberately broken plugins, one per loader error; TESSERA_BAD_PLUGIN picks which this build is
// (see tests/plugins/tests.cmake). Each is a plain handshake without engine headers beyond plugin_abi.h,
// so building them costs little.
#include <stdexcept>

#include "tessera/plugin_abi.h"

#define BAD_NO_ENTRY 1
#define BAD_ABI 2
#define BAD_ENGINE_VERSION 3
#define BAD_TORCH_VERSION 4
#define BAD_NULL_INFO 5
#define BAD_THROWS 6

#if !defined(TESSERA_BAD_PLUGIN)
#error "define TESSERA_BAD_PLUGIN to one of the BAD_* kinds"
#endif

namespace {
[[maybe_unused]] int register_nothing(void*, char*, size_t) { return 0; }
}  // namespace

#if TESSERA_BAD_PLUGIN == BAD_NO_ENTRY
// A library that forgot TESSERA_PLUGIN: exports something, but not the entry.
extern "C" TESSERA_PLUGIN_EXPORT int tessera_not_the_entry(void) { return 42; }

#elif TESSERA_BAD_PLUGIN == BAD_ABI
// A plugin from a future ABI. Every other field is null, so a loader that read any of them before
// checking abi_version would crash the test instead of reporting the mismatch.
extern "C" const TesseraPluginInfo* tessera_plugin_entry(void) {
  static const TesseraPluginInfo info = {999u, nullptr, nullptr, nullptr, nullptr};
  return &info;
}

#elif TESSERA_BAD_PLUGIN == BAD_ENGINE_VERSION
extern "C" const TesseraPluginInfo* tessera_plugin_entry(void) {
  static const TesseraPluginInfo info = {TESSERA_PLUGIN_ABI_VERSION, "bad_engine_version", "99.7.0",
                                         TESSERA_TORCH_VERSION, &register_nothing};
  return &info;
}

#elif TESSERA_BAD_PLUGIN == BAD_TORCH_VERSION
extern "C" const TesseraPluginInfo* tessera_plugin_entry(void) {
  static const TesseraPluginInfo info = {TESSERA_PLUGIN_ABI_VERSION, "bad_torch_version", TESSERA_VERSION, "0.4.1",
                                         &register_nothing};
  return &info;
}

#elif TESSERA_BAD_PLUGIN == BAD_NULL_INFO
extern "C" const TesseraPluginInfo* tessera_plugin_entry(void) { return nullptr; }

#elif TESSERA_BAD_PLUGIN == BAD_THROWS
// Goes through the macro: its try/catch must turn the exception into a message, not a crash.
namespace {
void register_throws(tessera::Registry&) { throw std::runtime_error("the sample cannot find its weights file"); }
}  // namespace
TESSERA_PLUGIN("throws", register_throws)

#else
#error "unknown TESSERA_BAD_PLUGIN kind"
#endif
