#pragma once
/// The ControlNet component cases of manifest_control.json (README_control.md): `controlnet_*_model_forward`
/// (ControlNetModel residuals, plain and guess mode, and the conditioning embedding) and `controlnet_*_step0_*`
/// (the residuals and the UNet's noise prediction with them, captured at step 0 of a pipeline; guess mode gives the
/// uncond rows zero residuals).
namespace tessera {

void register_controlnet_case_runners();

}  // namespace tessera
