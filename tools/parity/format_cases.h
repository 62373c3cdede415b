#pragma once
/// The single-file checkpoint and LoRA cases (manifest_formats.json, see README_formats.md):
/// `single_file_*_convert` (every tensor of params.key_map converted from the LDM/SGM file equals the diffusers
/// folder's exactly), `lora_*_fused_unet` (UNet and text encoders with the LoRA fused, their outputs and fused
/// weights; unfusing restores the base outputs). The single-file and LoRA pipeline cases run through the SD/SDXL
/// pipeline runner (pipeline_cases.cpp).
namespace tessera {

void register_format_case_runners();

}  // namespace tessera
