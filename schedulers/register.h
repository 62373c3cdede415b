#pragma once
/// Registration of the built-in schedulers as component types, and a direct factory.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tessera/registry.h"
#include "schedulers/scheduler.h"

namespace tessera {

/// Registers every built-in scheduler class (diffusers' names) as a ComponentCategory::Scheduler type. A spec
/// with `from` reads `from/subfolder/scheduler_config.json` (subfolder defaults to "scheduler" only when given);
/// its `config` map overrides fields of the file (or of the defaults, for from_config).
void register_builtin_schedulers(Registry& registry);

/// Creates scheduler `type` from a config object (diffusers' fields; missing fields take the class defaults).
/// Unknown type: ValidationError with a did-you-mean. `source` names the config file in errors.
SchedulerPtr make_scheduler(const std::string& type, const nlohmann::json& config, const std::string& source = {});

/// Reads `path` (a scheduler_config.json, NaN/Infinity allowed), applies `overrides`, creates `type`.
/// ModelLoadError when the file is missing or unreadable.
SchedulerPtr load_scheduler(const std::string& type, const std::string& path,
                            const nlohmann::json& overrides = nlohmann::json::object());

/// The scheduler class names make_scheduler knows, sorted.
std::vector<std::string> builtin_scheduler_names();

}  // namespace tessera
