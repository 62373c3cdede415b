#pragma once
/// LoRA: low-rank weight deltas fused into a model's Linear and Conv2d weights, as diffusers' `load_lora_weights`
/// + `fuse_lora` does, with unfuse for apps and servers that keep a model loaded and switch LoRAs.
///
///   LoraFile lora = LoraFile::open("pixel-art.safetensors");          // kohya, LoCon or diffusers/PEFT keys
///   FusedLoras fused = fuse_loras(*unet, "unet", {{&lora, 0.8}}, &unet_config_json);
///   ...                                                               // run with the LoRA
///   fused.unfuse();                                                   // the original weights, bit for bit
///
/// Formats: kohya/A1111 (`lora_unet_<path>.lora_down/.lora_up/.alpha`, `lora_te_`, SDXL `lora_te1_/lora_te2_`,
/// UNet paths in diffusers' or SGM's layout, LoCon convolutions), diffusers/PEFT (`unet.<path>.lora_A/lora_B`,
/// `text_encoder.`, `text_encoder_2.`; alpha from `lora_adapter_metadata`, else the rank) and the older diffusers
/// attention-processor names (`…attn1.processor.to_q_lora.down`). LoHa, LoKr, DoRA and full-diff files are refused
/// by name.
///
/// Scale: each module's own alpha (`.alpha`, else its rank); `s = alpha / rank`, times the LoRA's weight when it
/// is not 1 (peft's scale_layer) or, for several LoRAs, `s = weight * alpha / rank` per LoRA (peft's set_scale);
/// `W += delta * s` in float32, then back to the weight's dtype. delta = up @ down (Linear), the same on the
/// squeezed 1x1 kernels, and sum_r up[o,r] * down[r,i,y,x] for k x k convolutions.
///
/// Names are matched model-first (as ComfyUI does): every Linear/Conv2d of the model lists the names a LoRA may
/// give it, so a file module that matches none is an error listing a few of them (a LoRA of another family never
/// silently does nothing).
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
#include <torch/nn/module.h>

#include "tessera/spec.h"

namespace tessera {

/// One LoRA file, parsed: its modules by the name the file gives them (without the tensor suffix).
class LoraFile {
 public:
  struct Module {
    std::string name;       ///< "lora_unet_down_blocks_0_resnets_0_conv1", "unet.mid_block.attentions.0.proj_in"
    at::Tensor down, up;    ///< float32; down [r, in(, k, k)], up [out, r(, 1, 1)]
    int64_t rank = 0;
    double alpha = 0;       ///< the module's alpha (its rank when the file gives none)
  };

  /// Reads a safetensors LoRA; ModelLoadError naming the file and tensor for an unsupported format (LoHa, LoKr,
  /// DoRA, full diffs, pickles), a module with only one of down/up, ranks that differ between down and up, or a
  /// key that belongs to no component (prefixes lora_unet_, lora_te_, lora_te1_, lora_te2_, unet., text_encoder.,
  /// text_encoder_2.).
  static LoraFile open(const std::string& path);

  const std::string& path() const { return path_; }
  const std::vector<Module>& modules() const { return modules_; }
  /// The modules meant for `component` ("unet", "text_encoder", "text_encoder_2").
  std::vector<const Module*> modules_for(const std::string& component) const;

 private:
  std::string path_;
  std::vector<Module> modules_;
};

/// The weights a fuse replaced, to put back.
class FusedLoras {
 public:
  FusedLoras() = default;
  /// Restores every weight the fuse changed to its original tensor (bit-exact: the originals are kept, not
  /// recomputed). Idempotent.
  void unfuse();
  /// Patched weights.
  size_t size() const { return patched_.size(); }

 private:
  friend FusedLoras fuse_loras(torch::nn::Module&, const std::string&,
                               const std::vector<std::pair<const LoraFile*, double>>&, const nlohmann::json*);
  std::vector<std::pair<at::Tensor, at::Tensor>> patched_;  // (parameter, original data)
};

/// Fuses `loras` (file, weight) into `model`, the diffusers component `component` ("unet", "text_encoder",
/// "text_encoder_2"). `unet_config` (the UNet's config.json) lets kohya SDXL files name UNet modules in the SGM
/// layout. ModelLoadError listing the file modules that match no Linear/Conv2d of the model, or naming a module
/// whose delta does not fit the weight's shape. Runs under NoGradGuard.
FusedLoras fuse_loras(torch::nn::Module& model, const std::string& component,
                      const std::vector<std::pair<const LoraFile*, double>>& loras,
                      const nlohmann::json* unet_config = nullptr);

/// A LoRA weight as written ("0.8"); InputError naming the file for anything but a finite number.
double parse_lora_weight(const LoraSpec& lora);

/// The model factories' step: fuses `spec.loras` into a freshly loaded model (component = spec.subfolder, else
/// spec.name; `config` = its config.json). InputError for a weight that is not a number or a file given twice.
void fuse_component_loras(torch::nn::Module& model, const ComponentSpec& spec, const nlohmann::json& config);

}  // namespace tessera
