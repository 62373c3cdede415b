#pragma once
/// Component cases of SD3Transformer2DModel (tiny_sd3_transformer, tiny_sd3_5_transformer) for the parity runner.
#include "tools/parity/parity.h"

namespace tessera {

/// Loads `models_dir/params.model/params.subfolder` and compares forward(hidden_states, encoder_hidden_states,
/// pooled_projections, timestep) with `sample`, and the same call with skip_layers [0] with
/// `sample_skip_layers_0` (each when the case expects it).
ParityResult run_sd3_transformer_case(const ParityCase& c);

/// register_component_case_runner("SD3Transformer2DModel", run_sd3_transformer_case).
void register_sd3_case_runner();

}  // namespace tessera
