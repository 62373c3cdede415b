#pragma once
/// Reading diffusers model folders: `model_index.json`, per-component `config.json`, and the safetensors
/// weight files of a component (single file, variant such as `fp16`, or sharded with an index).
///
///   auto config = read_component_config("tiny-sd", "vae");               // tiny-sd/vae/config.json
///   auto files = resolve_weight_files("tiny-sd/vae", "diffusion_pytorch_model", "");
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace tessera {

/// Weight file base names used by diffusers (models) and transformers (text encoders).
inline constexpr const char* kDiffusersWeightsName = "diffusion_pytorch_model";
inline constexpr const char* kTransformersWeightsName = "model";

/// Reads a JSON file; ModelLoadError naming the file when it is missing or not valid JSON (with the parser's
/// line and column). Python's NaN / Infinity literals are accepted (as the strings "NaN", "Infinity",
/// "-Infinity") because Python's json.dump writes them.
nlohmann::json read_json_file(const std::string& path);

/// `folder/model_index.json` (the pipeline's component list); ModelLoadError when missing or invalid.
nlohmann::json read_model_index(const std::string& folder);

/// `folder/subfolder` (or `folder` when subfolder is empty), as a path string.
std::string component_dir(const std::string& folder, const std::string& subfolder);

/// `folder/subfolder/file` parsed as a JSON object; ModelLoadError naming the file when it is missing, not
/// valid JSON, or not an object.
nlohmann::json read_component_config(const std::string& folder, const std::string& subfolder,
                                     const std::string& file = "config.json");

/// The safetensors files holding a component's weights, looked up in `dir` in diffusers' order:
///   variant empty: `base.safetensors`, else the shards named by `base.safetensors.index.json`;
///   variant "fp16": `base.fp16.safetensors`, else the shards of `base.safetensors.index.fp16.json`
///   (or `base.fp16.safetensors.index.json`).
/// Shards come in the order of their first appearance in the index's weight_map; a shard name must be a plain
/// file name inside `dir`. ModelLoadError naming the folder and every name looked for when nothing matches
/// (mentioning .bin pickles, which are not supported, when only those exist), when the index is malformed, or
/// when a shard it names is missing.
std::vector<std::string> resolve_weight_files(const std::string& dir, const std::string& base,
                                              const std::string& variant = {});

}  // namespace tessera
