#pragma once
/// The "pipeline" case kind: a whole diffusers pipeline call (sd_*, sdxl_* cases) replayed through Tessera's
/// recipe (recipes/sd/auto.yaml or recipes/sdxl/auto.yaml) with the case's model, scheduler class and config,
/// guider, prompts, seed or latents, images and sizes as pipeline inputs. Compared: the images (NHWC), the final
/// latents, the latents after every step (step callbacks), and the text embeddings the case records.
#include <string>

#include "tessera/registry.h"
#include "tessera/value.h"
#include "tools/parity/parity.h"

namespace tessera {

/// Where the recipes are: the `TESSERA_RECIPES_DIR` environment variable, else the first `recipes/` folder with
/// `sd/auto.yaml` found walking up from the manifest's folder, then from the working directory, then an installed
/// copy next to the executable (<prefix>/share/tessera/recipes).
std::string find_recipes_dir(const std::string& manifest_dir);

ParityResult run_pipeline_case(const ParityCase& c);
void register_pipeline_case_runner();

/// Pipeline cases of another family (FLUX, SD3…) go to the runner registered for the prefix of their
/// `params.model` ("tiny-flux", "tiny-sd3"); the longest registered prefix wins, the SD/SDXL runner takes the rest.
void register_pipeline_family_runner(const std::string& model_prefix, ParityCaseRunner runner);

/// Shared by the family runners: a JSON config (scheduler_config, guider_config) as a Value map (nulls left out),
/// and the registry with every built-in block, scheduler, guider and model.
Value json_to_value(const nlohmann::json& j);
const Registry& full_registry();

}  // namespace tessera
