#include "tessera/components.h"

#include "tessera/registry.h"

#include <algorithm>
#include <condition_variable>
#include <exception>

namespace tessera {

struct ComponentsManager::Loading {
  std::condition_variable done;
  bool finished = false;
  ComponentPtr result;
  std::exception_ptr error;
};

ComponentPtr ComponentsManager::get_or_create(const std::string& key, const std::function<ComponentPtr()>& make) {
  std::unique_lock<std::mutex> lock(mu_);
  if (auto it = loaded_.find(key); it != loaded_.end()) return it->second;
  if (auto it = loading_.find(key); it != loading_.end()) {
    // Another thread is creating it: wait for that load instead of starting a second one.
    std::shared_ptr<Loading> pending = it->second;
    pending->done.wait(lock, [&] { return pending->finished; });
    if (pending->error) std::rethrow_exception(pending->error);
    return pending->result;
  }
  auto pending = std::make_shared<Loading>();
  loading_.emplace(key, pending);
  lock.unlock();
  ComponentPtr c;
  try {
    c = make();  // outside the lock: loading may be slow, and other keys may load meanwhile
  } catch (...) {
    lock.lock();
    pending->error = std::current_exception();
    pending->finished = true;
    loading_.erase(key);
    pending->done.notify_all();
    throw;
  }
  lock.lock();
  loaded_[key] = c;
  ++creations_;
  pending->result = c;
  pending->finished = true;
  loading_.erase(key);
  pending->done.notify_all();
  return c;
}

size_t ComponentsManager::creations() const {
  std::lock_guard<std::mutex> lock(mu_);
  return creations_;
}

void ComponentsManager::set_dtype_override(const std::string& dtype) {
  if (dtype.empty()) {
    dtype_override_.clear();
    return;
  }
  std::string problem;
  std::string canonical = canonical_dtype(dtype, &problem);
  if (canonical.empty()) throw InputError(problem);
  dtype_override_ = canonical;
}

bool ComponentsManager::is_loaded(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  return loaded_.count(key) > 0;
}

void ComponentsManager::unload(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  loaded_.erase(key);
}

void ComponentsManager::unload_all() {
  std::lock_guard<std::mutex> lock(mu_);
  loaded_.clear();
}

size_t ComponentsManager::total_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  size_t total = 0;
  for (const auto& kv : loaded_) total += kv.second->nbytes();
  return total;
}

std::vector<std::string> ComponentsManager::loaded_keys() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  for (const auto& kv : loaded_) out.push_back(kv.first);
  return out;
}

Components::Components(const Registry& registry, std::shared_ptr<ComponentsManager> manager)
    : registry_(registry), manager_(manager ? std::move(manager) : std::make_shared<ComponentsManager>()) {}

void Components::add_spec(const ComponentSpec& spec) {
  specs_[spec.name] = spec;
}

bool Components::has_spec(const std::string& name) const { return specs_.count(name) > 0; }

const ComponentSpec& Components::spec(const std::string& name) const {
  auto it = specs_.find(name);
  if (it == specs_.end()) {
    throw ExecutionError("no component named '" + name + "' in this pipeline", {}, {}, did_you_mean(name, names()));
  }
  return it->second;
}

std::vector<std::string> Components::names() const {
  std::vector<std::string> out;
  for (const auto& kv : specs_) out.push_back(kv.first);
  return out;
}

std::string Components::key_of(const ComponentSpec& spec) const {
  if (spec.creation == Creation::FromConfig)
    // from_config components are per pipeline and per name: their config may differ.
    return "config:" + spec.type + ":" + spec.name + ":" + spec.config.repr() + ":" + canonical_dtype(spec.dtype) +
           ":pipeline:" + std::to_string(reinterpret_cast<uintptr_t>(this));
  // Schedulers and guiders keep state while a run uses them (step index, sigmas, APG momentum): each pipeline
  // gets its own, so pipelines sharing a manager can run at the same time. Models and tokenizers are shared.
  const ComponentTypeInfo* info = registry_.find_component_type(spec.type);
  if (info && (info->category == ComponentCategory::Scheduler || info->category == ComponentCategory::Guider))
    return "pretrained:" + spec.type + ":" + spec.load_id() + ":pipeline:" +
           std::to_string(reinterpret_cast<uintptr_t>(this));
  return "pretrained:" + spec.type + ":" + spec.load_id();
}

ComponentSpec Components::effective_spec(const ComponentSpec& spec) const {
  ComponentSpec s = spec;
  if (!manager_->dtype_override().empty()) {
    const ComponentTypeInfo* info = registry_.find_component_type(spec.type);
    if (info && info->category == ComponentCategory::Model) s.dtype = manager_->dtype_override();
  }
  if (spec.creation == Creation::FromPretrained && !spec.from.empty()) {
    // A single-file checkpoint holds only weights: tokenizers, schedulers and other non-model components read
    // their files from its configs folder, which stands for the model folder.
    const ComponentTypeInfo* info = registry_.find_component_type(spec.type);
    if (info && info->category != ComponentCategory::Model)
      if (auto source = registry_.model_source(spec)) {
        s.from = source->config_dir;
        s.model_type.clear();
        s.config_from.clear();
      }
  }
  if (!manager_->lora_override().empty()) {
    const ComponentTypeInfo* info = registry_.find_component_type(spec.type);
    if (info && info->accepts_loras)
      s.loras.insert(s.loras.end(), manager_->lora_override().begin(), manager_->lora_override().end());
  }
  return s;
}

void Components::create_from_config_components() {
  for (const auto& kv : specs_)
    if (kv.second.creation == Creation::FromConfig) get(kv.first);
}

Components::~Components() {
  for (const auto& key : own_keys_) manager_->unload(key);
}

ComponentPtr Components::get(const std::string& name) {
  const ComponentSpec s = effective_spec(spec(name));
  std::string key = key_of(s);
  if (key.find(":pipeline:") != std::string::npos) {
    std::lock_guard<std::mutex> lock(own_mu_);
    if (std::find(own_keys_.begin(), own_keys_.end(), key) == own_keys_.end()) own_keys_.push_back(key);
  }
  return manager_->get_or_create(key, [&] { return registry_.create_component(s); });
}

bool Components::is_loaded(const std::string& name) const {
  auto it = specs_.find(name);
  return it != specs_.end() && manager_->is_loaded(key_of(effective_spec(it->second)));
}

const Value& Components::config(const std::string& name) const {
  auto it = configs_.find(name);
  if (it == configs_.end()) {
    std::vector<std::string> names;
    for (const auto& kv : configs_) names.push_back(kv.first);
    throw ExecutionError("no config named '" + name + "' (a block must declare it with a ConfigSpec)", {}, {},
                         did_you_mean(name, names));
  }
  return it->second;
}

void Components::unload(const std::string& name) { manager_->unload(key_of(effective_spec(spec(name)))); }

}  // namespace tessera
