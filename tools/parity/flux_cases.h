#pragma once
/// Component cases of FluxTransformer2DModel (tiny_flux_transformer, tiny_flux_dev_transformer) for the parity
/// runner.
#include "tools/parity/parity.h"

namespace tessera {

/// Loads `models_dir/params.model/params.subfolder` and compares the packed outputs with the goldens: `sample`
/// (img_ids / txt_ids) and `sample_random_ids` (img_ids_random / txt_ids_random); `guidance` is passed when the
/// case has it (dev).
ParityResult run_flux_transformer_case(const ParityCase& c);

/// register_component_case_runner("FluxTransformer2DModel", run_flux_transformer_case).
void register_flux_case_runner();

}  // namespace tessera
