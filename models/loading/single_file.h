#pragma once
/// Single-file Stable Diffusion checkpoints: one `.safetensors` (or `.ckpt` torch zip) in the original LDM/SGM
/// layout holding the UNet (`model.diffusion_model.*`), the VAE (`first_stage_model.*`) and the text encoder(s)
/// (`cond_stage_model.*` / `conditioner.embedders.N.*`), as A1111, ComfyUI and stable-diffusion.cpp load them and
/// diffusers' `from_single_file` converts them.
///
///   auto ckpt = SingleFileCheckpoint::open("v1-5-pruned-emaonly.safetensors");
///   SingleFileDetection d = ckpt->detect();                 // family "sd1", and why
///   auto unet = ckpt->component_tensors("unet", unet_config_json);   // diffusers names, views of the file
///
/// The file has no configs, tokenizer or scheduler config: those come from a diffusers folder of the same family
/// (`config_folder`, as diffusers' `config=`) or from the configs Tessera ships per family (model_defaults.h).
/// Conversion is tensor by tensor and mostly views of the mapped file (renames, OpenCLIP's in_proj rows, the VAE
/// attention's 1x1-conv weights viewed as Linear), so loading never holds two copies of the model; the few
/// copies are small (OpenCLIP's transposed text_projection).
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "models/loading/state_dict.h"

namespace tessera {

/// A family Tessera ships configs for and what told it apart.
struct SingleFileDetection {
  /// "sd1", "sd1-inpaint", "sd2", "sd2-v", "sd2-inpaint", "sdxl-base", "sdxl-refiner", "sdxl-inpaint"
  std::string family;
  /// The keys (and shapes) that decided, for `tessera plan` and messages.
  std::string evidence;
};

/// True when `path` names a regular file with a single-file checkpoint's extension (.safetensors, .ckpt, .pt,
/// .pth) rather than a diffusers folder.
bool is_single_file_checkpoint_path(const std::string& path);

/// How a recipe names a single file's family and configs (the `model_type` and `config` inputs).
struct SingleFileOptions {
  /// "" or "auto": detect from the keys; else one of SingleFileDetection::family's names.
  std::string model_type;
  /// "" : the shipped configs of the family; else a diffusers folder whose configs (and tokenizer, scheduler)
  /// are used, as diffusers' `from_single_file(..., config=folder)`.
  std::string config_folder;

  /// The family (model_type, or detected) and the folder its configs come from; ModelLoadError for an unknown
  /// model_type or a config folder that is not a diffusers folder (no model_index.json).
  std::string family(const class SingleFileCheckpoint& checkpoint) const;
  std::string config_dir(const class SingleFileCheckpoint& checkpoint) const;
};

class SingleFileCheckpoint {
 public:
  /// Opens the file (every component of a run shares one opened file: it is cached while any caller holds it,
  /// and the most recently opened file stays open until another one is opened). Safetensors files are memory-mapped; `.ckpt` torch zips are read with LibTorch's restricted
  /// unpickler (torch_checkpoint.h), other pickles are refused. ModelLoadError naming the file for a missing,
  /// truncated or foreign file.
  static std::shared_ptr<const SingleFileCheckpoint> open(const std::string& path);

  const std::string& path() const { return path_; }
  /// Every key of the file, sorted.
  std::vector<std::string> keys() const;
  bool has(const std::string& key) const { return tensors_.count(key) != 0; }
  /// The tensor under `key` as the file stores it (ModelLoadError naming the file and key when it has none).
  const at::Tensor& tensor(const std::string& key) const;

  /// The family from the keys, following diffusers' infer_diffusers_model_type where it can tell (inpainting by
  /// the 9-channel conv_in, SD2 by the 1024-wide cross attention) and the text encoders' key prefixes where it
  /// cannot (its XL tests need >= 10 OpenCLIP layers); v-prediction cannot be read from weights, so SD2 files are
  /// "sd2-v" (SD2.1-768, diffusers' default too) unless model_type says "sd2". A file that is not an SD UNet
  /// checkpoint (a LoRA, a ControlNet, a diffusers-format component, Playground, an upscaler) is a ModelLoadError
  /// that says what it looks like and lists the keys looked for.
  SingleFileDetection detect() const;

  /// The tensors of one diffusers component ("unet", "vae", "text_encoder", "text_encoder_2") under diffusers'
  /// names, for a model built from `config` (the component's config.json, whose layout sizes the name tables).
  /// Text encoders are routed by key prefix (never by width): CLIP-L `cond_stage_model.transformer.` /
  /// `conditioner.embedders.0.transformer.`, OpenCLIP `cond_stage_model.model.` / `conditioner.embedders.1.model.`
  /// (refiner: `.0.model.`); OpenCLIP layers beyond the config's num_hidden_layers are dropped (SD2's unused last
  /// layer) and its text_projection is kept only for `with_projection` models. A key of the component that no
  /// table maps is a ModelLoadError naming it; the strict load then checks the rest.
  std::map<std::string, SourceTensor> component_tensors(const std::string& component, const nlohmann::json& config,
                                                        bool with_projection = false) const;

  /// Keys of the file that are not weights of any component and are skipped by name (noise schedule buffers such
  /// as `betas`, `model_ema.*`, `position_ids`, `logit_scale`…).
  static bool is_ignored_key(const std::string& key);

  /// The diffusers components this file has weights for, by key prefix: "unet", "vae", "text_encoder",
  /// "text_encoder_2" (SDXL; the refiner has no "text_encoder").
  std::vector<std::string> components() const;

 private:
  SingleFileCheckpoint() = default;
  SourceTensor source(const std::string& key) const;
  std::string path_;
  std::shared_ptr<class SafetensorsFile> file_;      // safetensors: the mapping
  std::map<std::string, at::Tensor> tensors_;        // every tensor (views of the mapping, or read from a .ckpt)
};

}  // namespace tessera
