#pragma once
/// Registry of block types, component types (models, schedulers, guiders, tokenizers) and selectors.
/// Filled by explicit register_builtin_* calls and by plugins; records who registered each id.
#include <functional>
#include <optional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <tessera/block.h>
#include <tessera/components.h>

namespace tessera {

/// A leaf block type: its construction parameters and a factory.
struct BlockTypeInfo {
  std::string id;           ///< dotted, lower-case: "common.scale"
  std::string description;
  std::vector<InputParam> params;  ///< construction parameters (recipe `params:`)
  std::function<std::shared_ptr<LeafBlock>(const ValueMap& params)> create;
  std::string source;       ///< "builtin" or the plugin file that registered it
};

/// Categories of component types.
enum class ComponentCategory { Model, Scheduler, Guider, Tokenizer, Other };
const char* component_category_name(ComponentCategory c);

/// A component type: diffusers class name and a factory from a ComponentSpec.
struct ComponentTypeInfo {
  std::string type;  ///< "DDIMScheduler", "UNet2DConditionModel", …
  ComponentCategory category = ComponentCategory::Other;
  std::string description;
  std::function<ComponentPtr(const ComponentSpec&)> create;
  std::string source;
  /// Whether `create` fuses the spec's `loras` (UNet, CLIP text encoders); recipes may give `loras:` only to
  /// such types, and `tessera run --lora` adds to them.
  bool accepts_loras = false;
};

/// Where a pretrained component's configs live when its `from` is not a diffusers folder (a single-file
/// checkpoint): a folder with model_index.json and per-component configs, and a line saying what was found.
struct ModelSourceInfo {
  std::string config_dir;
  std::string description;
  /// The diffusers components the file holds weights for ("unet", "vae", "text_encoder", "text_encoder_2"): a
  /// recipe that leaves one unused is for another family (an SDXL file under recipes/sd).
  std::vector<std::string> components;
};
/// nullopt: `spec.from` is a diffusers folder (or nothing this resolver knows). May throw ModelLoadError.
using ModelSourceResolver = std::function<std::optional<ModelSourceInfo>(const ComponentSpec&)>;

class Registry {
 public:
  /// Set by the models library (register_builtin_models): resolves single-file checkpoints.
  void set_model_source_resolver(ModelSourceResolver resolver) { model_source_resolver_ = std::move(resolver); }
  /// The resolved source of `spec` when it is not a diffusers folder (nullopt without a resolver).
  std::optional<ModelSourceInfo> model_source(const ComponentSpec& spec) const {
    return model_source_resolver_ ? model_source_resolver_(spec) : std::nullopt;
  }

  /// Source attributed to registrations from now on ("builtin" by default; the plugin path while a plugin registers).
  void set_source(std::string source) { source_ = std::move(source); }
  const std::string& source() const { return source_; }

  /// Throws PluginError naming both sources when the id is taken.
  void add_block(BlockTypeInfo info);
  void add_component_type(ComponentTypeInfo info);
  void add_selector(Selector selector);

  /// Removes block types, component types and selectors by id (undoing a plugin whose registration failed
  /// half-way, so a corrected plugin can be loaded again without duplicate-id errors).
  void remove(const std::vector<std::string>& block_ids, const std::vector<std::string>& component_types,
              const std::vector<std::string>& selector_ids = {});

  const BlockTypeInfo* find_block(const std::string& id) const;
  const ComponentTypeInfo* find_component_type(const std::string& type) const;
  const Selector* find_selector(const std::string& id) const;

  std::vector<std::string> block_ids() const;
  std::vector<std::string> component_types(std::optional<ComponentCategory> category = std::nullopt) const;
  std::vector<std::string> selector_ids() const;

  /// Creates a leaf block; params are checked against the type's declared params (names and kinds,
  /// defaults filled in). Throws ValidationError (unknown id with did-you-mean, bad params).
  std::shared_ptr<LeafBlock> create_block(const std::string& id, const ValueMap& params, const SourceLoc& loc = {},
                                          const std::string& path = {}) const;
  /// Creates a component from its spec. Throws ValidationError for an unknown type.
  ComponentPtr create_component(const ComponentSpec& spec) const;

 private:
  ModelSourceResolver model_source_resolver_;
  std::string source_ = "builtin";
  std::map<std::string, BlockTypeInfo> blocks_;
  std::map<std::string, ComponentTypeInfo> components_;
  std::map<std::string, Selector> selectors_;
};

/// Convenience: registers a leaf block type `T` constructible from `const ValueMap&`.
template <typename T>
void add_block_type(Registry& r, std::string id, std::string description, std::vector<InputParam> params = {}) {
  r.add_block({std::move(id), std::move(description), std::move(params),
               [](const ValueMap& p) -> std::shared_ptr<LeafBlock> { return std::make_shared<T>(p); }, {}});
}


}  // namespace tessera
