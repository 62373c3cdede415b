#pragma once
/// The original (CompVis LDM / Stability SGM) parameter names of Stable Diffusion checkpoints and their diffusers
/// names, as two-way tables generated from a model's config (not string surgery): one table serves single-file
/// loading (LDM key -> diffusers key) and kohya LoRA files, whose SDXL module names use the SGM layout
/// (diffusers module -> LDM module).
///
///   NameTable unet = unet_name_table(unet_config);
///   unet.to_diffusers("input_blocks.1.0.in_layers.2.weight");   // "down_blocks.0.resnets.0.conv1.weight"
///   unet.to_ldm("mid_block.attentions.0.proj_in");               // "middle_block.1.proj_in"
///
/// The rules are diffusers' converters (loaders/single_file_utils.py convert_ldm_unet_checkpoint,
/// convert_ldm_vae_checkpoint), with block indices counted from the config rather than hard-coded for the
/// published block counts, so that any UNet/VAE shape (the tiny test models included) maps.
#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace tessera {

struct UNet2DConditionModelConfig;
struct AutoencoderKLConfig;

/// A two-way map of module-path prefixes. A key maps through its longest prefix (cut at '.') that the table
/// holds, the rest of the key kept as is; a key with no matching prefix has no name on the other side.
class NameTable {
 public:
  /// Adds the pair; a prefix already present on either side with another partner is a logic error (throws).
  void add(const std::string& diffusers, const std::string& ldm);
  std::optional<std::string> to_diffusers(const std::string& ldm_key) const;
  std::optional<std::string> to_ldm(const std::string& diffusers_key) const;
  size_t size() const { return to_ldm_.size(); }
  /// The pairs, diffusers prefix -> LDM prefix.
  const std::map<std::string, std::string>& pairs() const { return to_ldm_; }

 private:
  static std::optional<std::string> map_key(const std::map<std::string, std::string>& table, const std::string& key);
  std::map<std::string, std::string> to_ldm_, to_diffusers_;
};

/// UNet2DConditionModel <-> LDM `model.diffusion_model.*` (without that prefix): conv_in/out, time and SDXL
/// addition embeddings, input_blocks / middle_block / output_blocks with their resnet inner names
/// (in_layers.0/2, emb_layers.1, out_layers.0/3, skip_connection), attentions, down/up samplers.
NameTable unet_name_table(const UNet2DConditionModelConfig& config);

/// ControlNetModel <-> the original ControlNet layout (`control_model.*` without that prefix, as cldm.py names it):
/// the UNet's encoder half as unet_name_table maps it (conv_in, time / SDXL addition embeddings, input_blocks,
/// middle_block), the hint block `input_hint_block.{0, 2, 4, …}` → controlnet_cond_embedding.{conv_in, blocks.k,
/// conv_out} (a conv every other index, SiLUs between), `zero_convs.i.0` → controlnet_down_blocks.i and
/// `middle_block_out.0` → controlnet_mid_block. `conditioning_levels` = conditioning_embedding_out_channels' size.
NameTable controlnet_name_table(const UNet2DConditionModelConfig& config, size_t conditioning_levels);

/// AutoencoderKL <-> LDM `first_stage_model.*` (without that prefix): encoder down / decoder up (reversed) blocks,
/// mid block with its attention (norm/q/k/v/proj_out -> group_norm/to_q/to_k/to_v/to_out.0), norm_out,
/// quant convs. The LDM attention projections are 1x1 convolutions ([C, C, 1, 1]) where diffusers has Linear
/// ([C, C]): the loader reshapes them (see single_file.h).
NameTable vae_name_table(const AutoencoderKLConfig& config);

}  // namespace tessera
