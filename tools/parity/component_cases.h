#pragma once
/// The "component" case kind of the parity runner is shared by every model (UNet, VAE, text encoders): this
/// dispatcher picks the runner by the class the case's `api` names ("diffusers.UNet2DConditionModel.forward(…)"
/// → "UNet2DConditionModel"; "transformers.CLIPTextModel…" → "CLIPTextModel"). Cases of a class without a
/// runner are skipped.
///
///   register_component_case_runner("UNet2DConditionModel", run_unet_case);
#include <string>

#include "tools/parity/parity.h"

namespace tessera {

/// The class named by a component case's `api` (the second dotted word: "diffusers.AutoencoderKL.encode" →
/// "AutoencoderKL"); empty when it has no dot.
std::string component_case_class(const ParityCase& c);

/// Adds (or replaces) the runner for component cases of `class_name`, and registers the "component" kind's
/// dispatcher with register_case_runner (idempotent).
void register_component_case_runner(const std::string& class_name, ParityCaseRunner runner);

/// Component cases whose name starts with `name_prefix` ("single_file_", "lora_") go to `runner` whatever their
/// api says (these cases exercise loaders, not one class).
void register_component_case_prefix_runner(const std::string& name_prefix, ParityCaseRunner runner);

}  // namespace tessera
