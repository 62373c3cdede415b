#pragma once
/// Specs: what a block declares. A block's spec is the single source of truth for its docs,
/// for static validation and for what its BlockState lets it read and write.
#include <optional>
#include <string>
#include <vector>

#include <tessera/value.h>

namespace tessera {

/// One input of a block. A `kwargs_type` input with kind Map collects every state value
/// tagged with that group (e.g. all `denoiser_input_fields`).
struct InputParam {
  std::string name;
  Kind kind = Kind::Any;
  std::optional<Value> default_value;
  bool required = false;
  std::string description;
  std::string kwargs_type;

  InputParam() = default;
  InputParam(std::string name_, Kind kind_, std::string description_ = {}, bool required_ = false,
             std::optional<Value> default_ = std::nullopt, std::string kwargs_type_ = {});

  /// A standard input from the template registry (prompt, height, latents, …); throws SpecError if unknown.
  static InputParam from_template(const std::string& name);
  InputParam& with_default(Value v) {
    default_value = std::move(v);
    required = false;
    return *this;
  }
  InputParam& as_required() {
    required = true;
    default_value.reset();
    return *this;
  }
  InputParam& with_description(std::string d) {
    description = std::move(d);
    return *this;
  }
};

/// One output of a block. `kwargs_type` tags the value in the state (sticky group tag).
struct OutputParam {
  std::string name;
  Kind kind = Kind::Any;
  std::string description;
  std::string kwargs_type;

  OutputParam() = default;
  OutputParam(std::string name_, Kind kind_, std::string description_ = {}, std::string kwargs_type_ = {});
  static OutputParam from_template(const std::string& name);
};

/// Names of the standard inputs (for docs and did-you-mean).
std::vector<std::string> input_template_names();
std::vector<std::string> output_template_names();

enum class Creation { FromPretrained, FromConfig };

/// A component `type` of "auto": the class the model folder's model_index.json names for it (diffusers'
/// from_pretrained rule). Recipes often write `type: ${scheduler}` with the input defaulting to auto.
inline constexpr const char* kAutoComponentType = "auto";
const char* creation_name(Creation c);

/// A LoRA fused into a model component (models/adapters/lora.h). Both fields may hold `${input}` placeholders
/// until the pipeline resolves them; `weight` is then a number (a ValidationError/InputError otherwise).
struct LoraSpec {
  std::string file;
  std::string weight = "1";
  bool operator==(const LoraSpec& o) const { return file == o.file && weight == o.weight; }
};

/// A component a block needs (model, scheduler, guider, tokenizer…), by diffusers' class name.
struct ComponentSpec {
  std::string name;         ///< "unet", "scheduler", …
  std::string type;         ///< "UNet2DConditionModel", "DDIMScheduler", …
  std::string description;
  Value config;             ///< Map of config overrides (from_config) or none
  std::string from;         ///< model folder (from_pretrained)
  std::string subfolder;
  std::string variant;
  /// Compute dtype of a model component: "" (float32, the default), "fp32" or "bf16" (see canonical_dtype).
  /// Recipes set it with `dtype:`; `tessera run --dtype` overrides it for every model component of a run.
  std::string dtype;
  Creation creation = Creation::FromPretrained;
  /// When `from` is a single-file checkpoint (models/loading/single_file.h): its family ("" or "auto" = detect
  /// from the keys, else e.g. "sd2" / "sdxl-base") and a diffusers folder to take the configs from ("" = the
  /// configs Tessera ships for the family). Ignored for diffusers folders.
  std::string model_type;
  std::string config_from;
  /// LoRAs fused into the weights after loading, in order (model types that accept them: UNet, CLIP text
  /// encoders); `tessera run --lora` appends to every such component.
  std::vector<LoraSpec> loras;

  /// path|subfolder|variant|dtype (+ single-file hints and LoRAs when set): two specs with the same load id
  /// share one loaded component (an fp32 and a bf16 copy of the same weights do not, nor two LoRA sets).
  std::string load_id() const;
};

/// The canonical name of a component dtype: "", "fp32", "float32" → "fp32"; "bf16", "bfloat16" → "bf16".
/// For anything else returns "" and, when `problem` is given, says why (fp16/float16: LibTorch 1.13 has no CPU
/// half-precision convolution kernels; use bf16).
std::string canonical_dtype(const std::string& name, std::string* problem = nullptr);

/// A pipeline-level flag (e.g. `requires_safety_checker`).
struct ConfigSpec {
  std::string name;
  Value default_value;
  std::string description;
};

enum class BlockKind { Leaf, Sequential, Loop, Auto, Conditional };
const char* block_kind_name(BlockKind k);

/// Everything a leaf block declares. Built fluently:
///   BlockSpec("common.scale", "Multiply a tensor").input(x).output(y)
struct BlockSpec {
  std::string id;
  std::string description;
  std::vector<ComponentSpec> components;
  std::vector<ConfigSpec> configs;
  std::vector<InputParam> inputs;
  std::vector<OutputParam> outputs;

  BlockSpec() = default;
  BlockSpec(std::string id_, std::string description_) : id(std::move(id_)), description(std::move(description_)) {}
  BlockSpec& input(InputParam p) {
    inputs.push_back(std::move(p));
    return *this;
  }
  BlockSpec& output(OutputParam p) {
    outputs.push_back(std::move(p));
    return *this;
  }
  BlockSpec& component(ComponentSpec c) {
    components.push_back(std::move(c));
    return *this;
  }
  BlockSpec& config(ConfigSpec c) {
    configs.push_back(std::move(c));
    return *this;
  }
  const InputParam* find_input(const std::string& name) const;
  const OutputParam* find_output(const std::string& name) const;
};

}  // namespace tessera
