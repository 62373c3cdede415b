#include "models/loading/component_source.h"

#include <filesystem>

#include "tessera/error.h"
#include "tessera/registry.h"
#include "models/adapters/ip_adapter.h"
#include "models/loading/diffusers_folder.h"
#include "models/loading/model_defaults.h"
#include "models/loading/single_file.h"

namespace tessera {

namespace {

std::string component_key(const ComponentSpec& spec) { return spec.subfolder.empty() ? spec.name : spec.subfolder; }

/// A ControlNet in the original layout (control_v11p_sd15_canny.safetensors / .pth, or a training checkpoint's
/// control_model.*): `from` names a file of a ControlNetModel component.
bool is_controlnet_file(const ComponentSpec& spec) {
  return spec.type == "ControlNetModel" && is_single_file_checkpoint_path(spec.from);
}

/// The family of an original-layout ControlNet file by its weights: SDXL by the addition embedding (label_emb),
/// else SD 2.x / 1.x by the cross-attention width (1024 / 768). ModelLoadError for any other width (a ControlNet
/// of a model Tessera ships no configs for: give its diffusers ControlNet folder as config).
std::string controlnet_file_family(const SingleFileCheckpoint& ckpt, std::string* prefix_out = nullptr) {
  const std::string prefix = ckpt.has("control_model.input_hint_block.0.weight") ? "control_model." : "";
  if (!ckpt.has(prefix + "input_hint_block.0.weight"))
    throw ModelLoadError("'" + ckpt.path() + "' is not an original-layout ControlNet (no input_hint_block.0.weight)",
                         SourceLoc{ckpt.path()}, {},
                         "give a diffusers ControlNetModel folder, or a control_*.safetensors / .pth file");
  if (prefix_out) *prefix_out = prefix;
  if (ckpt.has(prefix + "label_emb.0.0.weight")) return "sdxl-base";
  int64_t cross = 0;
  for (const auto& key : ckpt.keys()) {
    const std::string tail = "attn2.to_k.weight";
    if (key.rfind(prefix, 0) == 0 && key.size() > tail.size() &&
        key.compare(key.size() - tail.size(), tail.size(), tail) == 0) {
      cross = ckpt.tensor(key).size(1);
      break;
    }
  }
  if (cross == 768) return "sd1";
  if (cross == 1024) return "sd2";
  throw ModelLoadError("the ControlNet '" + ckpt.path() + "' has cross-attention width " + std::to_string(cross) +
                           ", which is none of the families Tessera ships configs for (SD 1.x 768, SD 2.x 1024, SDXL)",
                       SourceLoc{ckpt.path()}, {},
                       "give a diffusers ControlNetModel folder of its architecture with --set controlnet_config=DIR");
}

/// The config of an original-layout ControlNet file: config_from's config.json (a diffusers ControlNetModel
/// folder, as diffusers' from_single_file(config=…)), else the shipped family's UNet config without the up half,
/// with the input and conditioning-embedding widths read from the file's conv_in and input_hint_block.
ModelConfig controlnet_file_config(const ComponentSpec& spec) {
  if (!spec.config_from.empty()) return ModelConfig::from_folder(spec.config_from, "");
  auto ckpt = SingleFileCheckpoint::open(spec.from);
  std::string prefix;
  const std::string family = controlnet_file_family(*ckpt, &prefix);
  nlohmann::json json = ModelConfig::from_folder(shipped_family_dir(family), "unet").json();
  for (const char* key : {"up_block_types", "out_channels", "_class_name"}) json.erase(key);
  json["in_channels"] = ckpt->tensor(prefix + "input_blocks.0.0.weight").size(1);
  const at::Tensor hint0 = ckpt->tensor(prefix + "input_hint_block.0.weight");  // [c0, conditioning_channels, 3, 3]
  json["conditioning_channels"] = hint0.size(1);
  std::vector<int64_t> widths{hint0.size(0)};
  // The stride-2 convs at input_hint_block.4, 8, 12, … widen the embedding; conv_out follows the last of them.
  for (int64_t i = 4; ckpt->has(prefix + "input_hint_block." + std::to_string(i + 2) + ".weight"); i += 4)
    widths.push_back(ckpt->tensor(prefix + "input_hint_block." + std::to_string(i) + ".weight").size(0));
  json["conditioning_embedding_out_channels"] = widths;
  return ModelConfig(json, spec.from + " (ControlNet config from the shipped " + family + " UNet config)");
}

}  // namespace

ModelConfig pretrained_component_config(const ComponentSpec& spec) {
  if (is_controlnet_file(spec)) return controlnet_file_config(spec);
  if (is_single_file_checkpoint_path(spec.from)) {
    auto ckpt = SingleFileCheckpoint::open(spec.from);
    const SingleFileOptions options{spec.model_type, spec.config_from};
    return ModelConfig::from_folder(options.config_dir(*ckpt), component_key(spec));
  }
  return ModelConfig::from_folder(spec.from, spec.subfolder);
}

void load_pretrained_weights(torch::nn::Module& module, const ComponentSpec& spec, const nlohmann::json& config,
                             const std::string& weights_name, const LoadStateDictOptions& options) {
  if (is_controlnet_file(spec)) {
    auto ckpt = SingleFileCheckpoint::open(spec.from);
    load_state_dict(module, ckpt->component_tensors("controlnet", config), options, "the ControlNet " + spec.from);
    return;
  }
  if (is_single_file_checkpoint_path(spec.from)) {
    auto ckpt = SingleFileCheckpoint::open(spec.from);
    const auto tensors =
        ckpt->component_tensors(component_key(spec), config, spec.type == "CLIPTextModelWithProjection");
    try {
      load_state_dict(module, tensors, options, "the " + component_key(spec) + " of " + spec.from);
    } catch (const ModelLoadError& e) {
      const SingleFileOptions o{spec.model_type, spec.config_from};
      throw ModelLoadError(e.message(), e.where(), e.block_path(),
                           "the " + component_key(spec) + " was built from the configs in '" + o.config_dir(*ckpt) +
                               "', which do not fit this file: give a diffusers folder of its family with --set "
                               "config=DIR (as diffusers' config=), or the family with --set model_type=…");
    }
    return;
  }
  load_state_dict(module, resolve_weight_files(component_dir(spec.from, spec.subfolder), weights_name, spec.variant),
                  options);
}

void register_single_file_source(Registry& registry) {
  registry.set_model_source_resolver([](const ComponentSpec& spec) -> std::optional<ModelSourceInfo> {
    // An IP-Adapter's `from` is its own .safetensors file (or FOLDER:PATH), not a model checkpoint.
    if (spec.type == "IPAdapter") {
      const std::string file = resolve_ip_adapter_file(spec.from);
      std::error_code ec;
      if (file.empty() || !std::filesystem::exists(file, ec)) return std::nullopt;  // "does not exist" follows
      ModelSourceInfo info;
      info.config_dir = file;
      info.description = "IP-Adapter file '" + info.config_dir + "'";
      return info;
    }
    if (spec.from.empty() || !is_single_file_checkpoint_path(spec.from)) return std::nullopt;
    if (is_controlnet_file(spec)) {
      ModelSourceInfo info;
      auto ckpt = SingleFileCheckpoint::open(spec.from);
      const std::string family = spec.config_from.empty() ? controlnet_file_family(*ckpt) : std::string();
      info.config_dir = family.empty() ? spec.config_from : shipped_family_dir(family);
      info.description = "original-layout ControlNet '" + spec.from + "', configs from '" + info.config_dir + "'" +
                         (family.empty() ? std::string() : " (family " + family + ", by its weights)");
      return info;
    }
    auto ckpt = SingleFileCheckpoint::open(spec.from);
    const SingleFileOptions options{spec.model_type, spec.config_from};
    ModelSourceInfo info;
    info.config_dir = options.config_dir(*ckpt);
    const bool named = !(spec.model_type.empty() || spec.model_type == "auto");
    std::string family;
    if (named) {
      family = options.family(*ckpt) + " (named by model_type)";
    } else {
      const SingleFileDetection d = ckpt->detect();
      family = d.family + " (detected: " + d.evidence + ")";
    }
    info.description = "single-file checkpoint '" + spec.from + "', family " + family + ", configs from '" +
                       info.config_dir + "'";
    info.components = ckpt->components();
    return info;
  });
}

}  // namespace tessera
