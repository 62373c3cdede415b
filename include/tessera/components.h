#pragma once
/// Components (models, schedulers, guiders, tokenizers): created from config eagerly, loaded from
/// pretrained folders lazily on first use, shared by load id, unloadable.
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <tessera/error.h>
#include <tessera/spec.h>

namespace tessera {

class Registry;

/// Base of every component object.
class Component {
 public:
  virtual ~Component() = default;
  /// diffusers class name, e.g. "UNet2DConditionModel".
  virtual std::string type() const = 0;
  /// Bytes held (parameters, buffers); 0 when not meaningful.
  virtual size_t nbytes() const { return 0; }
};
using ComponentPtr = std::shared_ptr<Component>;

/// Owns loaded components and shares them between pipelines by load id (type + path|subfolder|variant|dtype).
///
/// Thread-safe: get_or_create, is_loaded, unload, unload_all, total_bytes, loaded_keys and creations may be called
/// from any thread (set the dtype and LoRA overrides before the manager is shared). A component is created once
/// even when two threads ask for it at the same time (the second waits for the first's load and gets the same
/// object; different components load in parallel). Models and tokenizers (stateless while running) are shared by
/// every pipeline on the manager; schedulers and guiders (they keep per-run state) are per pipeline
/// (Components::key_of).
/// unload() drops the manager's reference: a run that holds the component keeps it until it lets go.
class ComponentsManager {
 public:
  /// A dtype ("fp32" or "bf16", canonical_dtype names; "" = none) that replaces the `dtype` of every Model-category
  /// component created through this manager from now on (`tessera run --dtype`). InputError for an unknown name.
  void set_dtype_override(const std::string& dtype);
  const std::string& dtype_override() const { return dtype_override_; }
  /// LoRAs appended to the `loras` of every component whose type accepts them (`tessera run --lora`), for
  /// components created through this manager from now on.
  void set_lora_override(std::vector<LoraSpec> loras) { lora_override_ = std::move(loras); }
  const std::vector<LoraSpec>& lora_override() const { return lora_override_; }

  /// Returns the component for `key`, creating it with `make` if absent. While one thread runs `make` for a key,
  /// other callers for that key wait and get its result; when `make` throws, each waiting caller gets the same
  /// exception and the next call tries again.
  ComponentPtr get_or_create(const std::string& key, const std::function<ComponentPtr()>& make);
  bool is_loaded(const std::string& key) const;
  void unload(const std::string& key);
  void unload_all();
  size_t total_bytes() const;
  std::vector<std::string> loaded_keys() const;
  /// How many times a component was created (loads, not cache hits); for tests and reports.
  size_t creations() const;

 private:
  struct Loading;  ///< a component being created: callers for its key wait on it
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<Loading>> loading_;
  std::string dtype_override_;
  std::vector<LoraSpec> lora_override_;
  std::map<std::string, ComponentPtr> loaded_;
  size_t creations_ = 0;
};

/// The components of one pipeline, by name. `get` loads on first use.
class Components {
 public:
  Components(const Registry& registry, std::shared_ptr<ComponentsManager> manager);
  /// Unloads this pipeline's own components (from_config ones, schedulers, guiders) from the manager.
  ~Components();
  Components(const Components&) = delete;
  Components& operator=(const Components&) = delete;

  /// Declares a component. A second spec with the same name must be identical (else ValidationError).
  void add_spec(const ComponentSpec& spec);
  bool has_spec(const std::string& name) const;
  const ComponentSpec& spec(const std::string& name) const;
  std::vector<std::string> names() const;

  /// Creates every from_config component now (cheap; errors surface before the run).
  void create_from_config_components();

  /// The component `name`, creating or loading it on first use.
  ComponentPtr get(const std::string& name);
  template <typename T>
  std::shared_ptr<T> get_as(const std::string& name) {
    auto c = get(name);
    auto t = std::dynamic_pointer_cast<T>(c);
    if (!t)
      throw ExecutionError("component '" + name + "' has type " + c->type() + ", which is not what the block expects");
    return t;
  }
  bool is_loaded(const std::string& name) const;
  void unload(const std::string& name);
  ComponentsManager& manager() { return *manager_; }

  /// Pipeline-level config values (ConfigSpec defaults, overridden by the recipe's `configs:`).
  void set_config(const std::string& name, Value value) { configs_[name] = std::move(value); }
  /// The value of config `name`; ExecutionError if no block declared it.
  const Value& config(const std::string& name) const;

 private:
  std::string key_of(const ComponentSpec& spec) const;
  /// The spec as created: the manager's dtype override applied to Model-category components.
  ComponentSpec effective_spec(const ComponentSpec& spec) const;
  const Registry& registry_;
  std::shared_ptr<ComponentsManager> manager_;
  std::map<std::string, ComponentSpec> specs_;
  std::map<std::string, Value> configs_;
  std::vector<std::string> own_keys_;  ///< keys of this pipeline's own components in the manager
  std::mutex own_mu_;
};

}  // namespace tessera
