#pragma once
/// The built-in guiders, by diffusers class name, and their construction from a config.
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "tessera/registry.h"
#include "guiders/guider.h"

namespace tessera {

/// Registers every built-in guider as a ComponentCategory::Guider component type.
void register_builtin_guiders(Registry& registry);

/// The built-in guider class names, sorted.
std::vector<std::string> builtin_guider_types();

/// A guider of class `type` configured from `config` (diffusers' field names, as in guider_config.json).
/// ValidationError for an unknown type (with did-you-mean), an unknown field (naming it, with did-you-mean), a
/// mistyped field, or a value diffusers rejects. `_class_name`, when present, must equal `type`.
///   auto g = make_guider("ClassifierFreeGuidance", {{"guidance_scale", 5.0}});
GuiderPtr make_guider(const std::string& type, const nlohmann::json& config = nlohmann::json::object());

/// A guider from a component spec: `from`/`subfolder` name a folder with guider_config.json (read first), and
/// `config` (a map) overrides its fields.
GuiderPtr make_guider(const ComponentSpec& spec);

}  // namespace tessera
