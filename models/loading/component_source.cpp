#include "models/loading/component_source.h"

#include "engine/error.h"
#include "engine/registry.h"
#include "models/loading/diffusers_folder.h"
#include "models/loading/single_file.h"

namespace tessera {

namespace {

std::string component_key(const ComponentSpec& spec) { return spec.subfolder.empty() ? spec.name : spec.subfolder; }

}  // namespace

ModelConfig pretrained_component_config(const ComponentSpec& spec) {
  if (is_single_file_checkpoint_path(spec.from)) {
    auto ckpt = SingleFileCheckpoint::open(spec.from);
    const SingleFileOptions options{spec.model_type, spec.config_from};
    return ModelConfig::from_folder(options.config_dir(*ckpt), component_key(spec));
  }
  return ModelConfig::from_folder(spec.from, spec.subfolder);
}

void load_pretrained_weights(torch::nn::Module& module, const ComponentSpec& spec, const nlohmann::json& config,
                             const std::string& weights_name, const LoadStateDictOptions& options) {
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
    // An IP-Adapter's `from` is its own .safetensors file, not a model checkpoint.
    if (spec.type == "IPAdapter" || spec.from.empty() || !is_single_file_checkpoint_path(spec.from)) return std::nullopt;
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
