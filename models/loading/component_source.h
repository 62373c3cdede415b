#pragma once
/// Where a pretrained model component's config and weights come from: a diffusers folder (`from`/`subfolder`,
/// config.json + safetensors) or a single-file checkpoint (`from` names the file; the config comes from its
/// configs folder and the weights are converted from the LDM/SGM layout, models/loading/single_file.h). Model
/// factories go through these two calls so that every model class loads from both.
///
///   ModelConfig cfg = pretrained_component_config(spec);
///   ... build the model from cfg ...
///   load_pretrained_weights(*model, spec, cfg.json(), kDiffusersWeightsName, options);
#include <string>

#include <nlohmann/json.hpp>

#include "tessera/spec.h"
#include "models/loading/config_reader.h"
#include "models/loading/state_dict.h"

namespace tessera {

class Registry;

/// `folder/subfolder/config.json`, or for a single file `<configs folder>/subfolder/config.json`.
ModelConfig pretrained_component_config(const ComponentSpec& spec);

/// Loads every weight of `module` strictly (load_state_dict): the folder's weight files named `weights_name`
/// (+ variant), or the single file's tensors of component `spec.subfolder` converted for `config`.
void load_pretrained_weights(torch::nn::Module& module, const ComponentSpec& spec, const nlohmann::json& config,
                             const std::string& weights_name, const LoadStateDictOptions& options);

/// Registers the resolver that lets the engine see a single file's configs folder (Registry::model_source):
/// `from` naming a .safetensors/.ckpt file.
void register_single_file_source(Registry& registry);

}  // namespace tessera
