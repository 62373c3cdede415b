#pragma once
/// The "guider" case kind of the parity runner (tools/parity/guider_cases.cpp).
#include "tools/parity/parity.h"

namespace tessera {

/// Replays one guider_* case: for each step i, set_state(i, T, timesteps[i]); prepare_inputs;
/// forward(pred_cond[i], pred_uncond[i][, pred_cond_skip[i]]).pred against pred[i].
ParityResult run_guider_case(const ParityCase& c);

/// register_case_runner("guider", run_guider_case); called by the tools that run parity (tessera parity, tests).
void register_guider_case_runner();

}  // namespace tessera
