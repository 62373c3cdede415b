#include "tessera/registry.h"

namespace tessera {

const char* component_category_name(ComponentCategory c) {
  switch (c) {
    case ComponentCategory::Model: return "model";
    case ComponentCategory::Scheduler: return "scheduler";
    case ComponentCategory::Guider: return "guider";
    case ComponentCategory::Tokenizer: return "tokenizer";
    case ComponentCategory::Other: return "other";
  }
  return "?";
}

namespace {
template <typename M>
std::vector<std::string> keys(const M& m) {
  std::vector<std::string> out;
  for (const auto& kv : m) out.push_back(kv.first);
  return out;
}

void check_id(const std::string& id, const std::string& what) {
  if (id.empty()) throw PluginError(what + " id is empty");
  for (char c : id)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-'))
      throw PluginError(what + " id '" + id + "' has the character '" + std::string(1, c) +
                        "'; use letters, digits, '.', '_' and '-'");
}
}  // namespace

void Registry::add_block(BlockTypeInfo info) {
  check_id(info.id, "block");
  if (!info.create) throw PluginError("block type '" + info.id + "' has no factory");
  info.source = source_;
  auto it = blocks_.find(info.id);
  if (it != blocks_.end())
    throw PluginError("block id '" + info.id + "' is registered twice: first by " + it->second.source + ", again by " +
                      source_, {}, {}, "rename one of them (ids are dotted, e.g. 'myplugin.my_block')");
  blocks_.emplace(info.id, std::move(info));
}

void Registry::add_component_type(ComponentTypeInfo info) {
  check_id(info.type, "component type");
  if (!info.create) throw PluginError("component type '" + info.type + "' has no factory");
  info.source = source_;
  auto it = components_.find(info.type);
  if (it != components_.end())
    throw PluginError("component type '" + info.type + "' is registered twice: first by " + it->second.source +
                      ", again by " + source_);
  components_.emplace(info.type, std::move(info));
}

void Registry::add_selector(Selector selector) {
  check_id(selector.id, "selector");
  auto it = selectors_.find(selector.id);
  if (it != selectors_.end()) throw PluginError("selector '" + selector.id + "' is registered twice (again by " + source_ + ")");
  selectors_.emplace(selector.id, std::move(selector));
}

void Registry::remove(const std::vector<std::string>& block_ids, const std::vector<std::string>& component_types,
                      const std::vector<std::string>& selector_ids) {
  for (const auto& id : block_ids) blocks_.erase(id);
  for (const auto& t : component_types) components_.erase(t);
  for (const auto& id : selector_ids) selectors_.erase(id);
}

const BlockTypeInfo* Registry::find_block(const std::string& id) const {
  auto it = blocks_.find(id);
  return it == blocks_.end() ? nullptr : &it->second;
}

const ComponentTypeInfo* Registry::find_component_type(const std::string& type) const {
  auto it = components_.find(type);
  return it == components_.end() ? nullptr : &it->second;
}

const Selector* Registry::find_selector(const std::string& id) const {
  auto it = selectors_.find(id);
  return it == selectors_.end() ? nullptr : &it->second;
}

std::vector<std::string> Registry::block_ids() const { return keys(blocks_); }
std::vector<std::string> Registry::selector_ids() const { return keys(selectors_); }

std::vector<std::string> Registry::component_types(std::optional<ComponentCategory> category) const {
  std::vector<std::string> out;
  for (const auto& kv : components_)
    if (!category || kv.second.category == *category) out.push_back(kv.first);
  return out;
}

std::shared_ptr<LeafBlock> Registry::create_block(const std::string& id, const ValueMap& params, const SourceLoc& loc,
                                                  const std::string& path) const {
  const BlockTypeInfo* info = find_block(id);
  if (!info) throw ValidationError("unknown block id '" + id + "'", loc, path, did_you_mean(id, block_ids()));
  ValueMap checked;
  std::vector<std::string> names;
  for (const auto& p : info->params) names.push_back(p.name);
  for (const auto& [k, v] : params) {
    const InputParam* decl = nullptr;
    for (const auto& p : info->params)
      if (p.name == k) decl = &p;
    if (!decl) {
      std::string hint = did_you_mean(k, names);
      if (hint.empty()) hint = names.empty() ? "this block takes no params" : "params of " + id + ": " + [&] {
        std::string s;
        for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
        return s;
      }();
      throw ValidationError("block " + id + " has no param '" + k + "'", loc, path, hint);
    }
    try {
      checked[k] = v.coerced(decl->kind, k);
    } catch (const InputError& e) {
      throw ValidationError("param '" + k + "' of block " + id + ": " + e.message(), loc, path);
    }
  }
  for (const auto& p : info->params) {
    if (checked.count(p.name)) continue;
    if (p.default_value) checked[p.name] = *p.default_value;
    else if (p.required)
      throw ValidationError("block " + id + " needs param '" + p.name + "' (" + kind_name(p.kind) + ")", loc, path,
                            p.description);
  }
  std::shared_ptr<LeafBlock> block;
  try {
    block = info->create(checked);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw ValidationError("block " + id + " rejected its params: " + e.what(), loc, path);
  }
  if (!block) throw ValidationError("factory of block " + id + " returned nothing", loc, path);
  if (block->cached_spec().id != id)
    throw ValidationError("block registered as '" + id + "' declares id '" + block->cached_spec().id + "'", loc, path);
  block->set_loc(loc);
  return block;
}

ComponentPtr Registry::create_component(const ComponentSpec& spec) const {
  const ComponentTypeInfo* info = find_component_type(spec.type);
  if (!info)
    throw ValidationError("unknown component type '" + spec.type + "' for component '" + spec.name + "'", {}, {},
                          did_you_mean(spec.type, component_types()));
  ComponentPtr c = info->create(spec);
  if (!c) throw ModelLoadError("component type " + spec.type + " created nothing for '" + spec.name + "'");
  return c;
}


}  // namespace tessera
