#include "tessera/state.h"

#include "tessera/error.h"

namespace tessera {

namespace {
const Value kNone;
const std::set<std::string> kNoTags;
}  // namespace

void PipelineState::set(const std::string& name, Value value, const std::string& kwargs_type) {
  values_[name] = std::move(value);
  if (!kwargs_type.empty()) tags_[name].insert(kwargs_type);
}

const Value& PipelineState::get(const std::string& name) const {
  auto it = values_.find(name);
  return it == values_.end() ? kNone : it->second;
}

bool PipelineState::has(const std::string& name) const {
  auto it = values_.find(name);
  return it != values_.end() && !it->second.is_none();
}

void PipelineState::erase(const std::string& name) { values_.erase(name); }

ValueMap PipelineState::get_by_kwargs(const std::string& kwargs_type) const {
  ValueMap out;
  for (const auto& [name, tags] : tags_)
    if (tags.count(kwargs_type) && has(name)) out[name] = values_.at(name);
  return out;
}

const std::set<std::string>& PipelineState::tags(const std::string& name) const {
  auto it = tags_.find(name);
  return it == tags_.end() ? kNoTags : it->second;
}

std::vector<std::string> PipelineState::names() const {
  std::vector<std::string> out;
  for (const auto& kv : values_) out.push_back(kv.first);
  return out;
}

BlockState::BlockState(const BlockSpec& spec, const PipelineState& state, std::string block_path)
    : spec_(spec), path_(std::move(block_path)) {
  for (const auto& in : spec.inputs) {
    if (!in.kwargs_type.empty() && in.kind == Kind::Map) {
      inputs_[in.name] = Value(state.get_by_kwargs(in.kwargs_type));
      continue;
    }
    Value v = state.get(in.name);
    if (v.is_none() && in.default_value) v = *in.default_value;
    if (v.is_none()) {
      if (in.required)
        throw InputError("required input '" + in.name + "' (" + kind_name(in.kind) + ") is missing", {}, path_,
                         "give it with --set " + in.name + "=… or from an earlier block");
      inputs_[in.name] = Value();
      continue;
    }
    inputs_[in.name] = v.coerced(in.kind, in.name);
  }
}

const Value& BlockState::get(const std::string& name) const {
  auto w = written_.find(name);
  if (w != written_.end()) return w->second;
  auto it = inputs_.find(name);
  if (it == inputs_.end()) {
    std::vector<std::string> declared;
    for (const auto& p : spec_.inputs) declared.push_back(p.name);
    throw SpecError("block " + spec_.id + " read '" + name + "', which its spec does not declare as an input", {},
                    path_, did_you_mean(name, declared));
  }
  return it->second;
}

bool BlockState::has(const std::string& name) const {
  if (written_.count(name)) return !written_.at(name).is_none();
  auto it = inputs_.find(name);
  return it != inputs_.end() && !it->second.is_none();
}

void BlockState::set(const std::string& name, Value value) {
  Kind declared = Kind::Any;
  if (const auto* out = spec_.find_output(name)) {
    declared = out->kind;
  } else if (const auto* in = spec_.find_input(name)) {
    declared = in->kind;
  } else {
    throw SpecError("block " + spec_.id + " wrote '" + name + "', which its spec declares neither as output nor input",
                    {}, path_);
  }
  if (!value.is_none() && !kind_accepts(declared, value.kind()))
    throw SpecError("block " + spec_.id + " set '" + name + "' to a " + kind_name(value.kind()) + " but declares it as " +
                        kind_name(declared),
                    {}, path_);
  written_[name] = std::move(value);
}

void BlockState::commit(PipelineState& state) const {
  for (const auto& out : spec_.outputs) {
    if (!written_.count(out.name))
      throw SpecError("block " + spec_.id + " did not set its declared output '" + out.name + "'", {}, path_);
  }
  for (const auto& [name, value] : written_) {
    const auto* out = spec_.find_output(name);
    state.set(name, value, out ? out->kwargs_type : std::string());
  }
}

}  // namespace tessera
