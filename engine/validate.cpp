// Static validation of a built pipeline: everything that can be checked without reading a weight.
#include <cstdlib>
#include <map>
#include <set>

#include "tessera/pipeline.h"

namespace tessera {

namespace {

struct Available {
  Kind kind;
  std::string source;  ///< "input 'x'", "block a.b"
};

struct Checker {
  const Pipeline& pipe;
  const Recipe& recipe;
  std::vector<ValidationError>& errors;
  std::set<std::string> reported;  // dedupe across workflows

  void add(ValidationError e) {
    std::string key = e.what();
    if (reported.insert(key).second) errors.push_back(std::move(e));
  }

  std::string scenario_name(const std::string& workflow) const {
    return workflow.empty() ? "" : "workflow '" + workflow + "': ";
  }

  /// Walks the blocks that `known` selects, checking each leaf's inputs against what is available.
  void simulate(const Block& b, const std::string& path, std::map<std::string, Available>& avail,
                PipelineState& known, const std::string& wf) {
    switch (b.kind()) {
      case BlockKind::Leaf: {
        for (const auto& p : b.inputs()) {
          if (!p.kwargs_type.empty() && p.kind == Kind::Map) continue;
          auto it = avail.find(p.name);
          if (it != avail.end()) {
            if (!kind_accepts(p.kind, it->second.kind))
              add(ValidationError(scenario_name(wf) + "block " + b.type_id() + " reads '" + p.name + "' as " +
                                      kind_name(p.kind) + ", but " + it->second.source + " provides " +
                                      kind_name(it->second.kind),
                                  b.loc(), path));
          } else if (p.required && !p.default_value) {
            add(ValidationError(scenario_name(wf) + "block " + b.type_id() + " requires input '" + p.name + "' (" +
                                    kind_name(p.kind) + "), but nothing provides it",
                                b.loc(), path,
                                "declare it under 'inputs:' of the recipe, add it to the workflow, or add a block that "
                                "outputs it before this one"));
          }
        }
        for (const auto& o : b.outputs()) {
          auto it = avail.find(o.name);
          if (it != avail.end() && !kind_accepts(o.kind, it->second.kind) && !kind_accepts(it->second.kind, o.kind))
            add(ValidationError("two producers of '" + o.name + "' with different kinds: " + it->second.source + " (" +
                                    kind_name(it->second.kind) + ") and block " + path + " (" + kind_name(o.kind) + ")",
                                b.loc(), path, "rename one of the outputs"));
          avail[o.name] = {o.kind, "block " + path};
          if (!known.has(o.name)) known.set(o.name, Value(true));
        }
        return;
      }
      case BlockKind::Sequential:
        for (const auto& c : b.children()) simulate(*c, join_path(path, c->name()), avail, known, wf);
        return;
      case BlockKind::Loop: {
        const auto& lb = static_cast<const LoopSequentialBlocks&>(b);
        const std::string& src = lb.options().over.empty() ? lb.options().count : lb.options().over;
        auto it = avail.find(src);
        if (it == avail.end())
          add(ValidationError(scenario_name(wf) + "loop iterates '" + src + "', but nothing provides it", b.loc(), path));
        else if (!lb.options().count.empty() && !kind_accepts(Kind::Int, it->second.kind))
          add(ValidationError("loop count '" + src + "' must be an int, but " + it->second.source + " provides " +
                                  kind_name(it->second.kind),
                              b.loc(), path));
        for (const auto& v : lb.loop_variables()) {
          avail[v.name] = {v.kind, "loop " + path};
          known.set(v.name, Value(true));
        }
        for (const auto& c : b.children()) simulate(*c, join_path(path, c->name()), avail, known, wf);
        return;
      }
      case BlockKind::Auto:
      case BlockKind::Conditional: {
        const auto& ab = static_cast<const AutoBlocks&>(b);
        const Block* chosen = nullptr;
        try {
          chosen = ab.select([&](const std::string& n) { return known.has(n); }, &known);
        } catch (const Error& e) {
          add(ValidationError(scenario_name(wf) + e.message(), b.loc(), path, e.hint()));
          return;
        }
        if (chosen) simulate(*chosen, join_path(path, chosen->name()), avail, known, wf);
        return;
      }
    }
  }

  /// One scenario: `present` inputs given (a workflow), plus recipe defaults.
  void run_scenario(const std::string& wf, const std::vector<std::string>& present) {
    std::map<std::string, Available> avail;
    PipelineState known;
    for (const auto& in : recipe.inputs) {
      if (!in.default_value && !in.required && wf.empty()) {
        // Without workflows every declared input counts as given.
      } else if (!in.default_value && !in.required) {
        continue;
      }
      Kind k = in.kind ? *in.kind : in.default_value ? in.default_value->kind() : Kind::Any;
      avail[in.name] = {k, "recipe input '" + in.name + "'"};
      known.set(in.name, in.default_value ? *in.default_value : Value(true));
    }
    for (const auto& n : present) {
      if (avail.count(n)) continue;
      const RecipeInput* in = recipe.find_input(n);
      Kind k = in && in->kind ? *in->kind : Kind::Any;
      avail[n] = {k, "workflow input '" + n + "'"};
      known.set(n, Value(true));
    }
    simulate(pipe.root(), "", avail, known, wf);
  }
};

std::string substitute_placeholder(const std::string& s, const std::string& var, const std::string& value) {
  std::string out = s;
  const std::string key = "${" + var + "}";
  for (size_t i = out.find(key); i != std::string::npos; i = out.find(key, i + value.size()))
    out.replace(i, key.size(), value);
  return out;
}

std::vector<std::string> placeholders(const std::string& s) {
  std::vector<std::string> out;
  size_t i = 0;
  while ((i = s.find("${", i)) != std::string::npos) {
    size_t e = s.find('}', i);
    if (e == std::string::npos) break;
    out.push_back(s.substr(i + 2, e - i - 2));
    i = e + 1;
  }
  return out;
}

}  // namespace

std::vector<ValidationError> Pipeline::problems() const {
  std::vector<ValidationError> errors;
  Checker ck{*this, recipe_, errors, {}};

  // Every name any block reads or writes, for did-you-mean and trigger checks.
  std::set<std::string> block_inputs, block_outputs;
  std::map<std::string, std::pair<std::string, Value>> defaults;  // input → (block path, default)
  std::map<std::string, std::pair<std::string, ComponentSpec>> expected;  // component → (block path, spec)
  walk_blocks(*root_, [&](const std::string& path, const Block& b, const std::vector<const Block*>&) {
    if (b.kind() == BlockKind::Loop)
      for (const auto& v : static_cast<const LoopSequentialBlocks&>(b).loop_variables()) block_outputs.insert(v.name);
    if (b.kind() == BlockKind::Conditional)
      for (const auto& r : static_cast<const ConditionalBlocks&>(b).selector().reads) block_inputs.insert(r);
    if (b.kind() == BlockKind::Loop) {
      const auto& lo = static_cast<const LoopSequentialBlocks&>(b).options();
      block_inputs.insert(lo.over.empty() ? lo.count : lo.over);
    }
    if (b.kind() != BlockKind::Leaf) return;
    for (const auto& p : b.inputs()) {
      block_inputs.insert(p.name);
      if (!p.default_value) continue;
      auto it = defaults.find(p.name);
      if (it == defaults.end()) {
        defaults[p.name] = {path, *p.default_value};
      } else if (it->second.second.repr() != p.default_value->repr() && !recipe_.find_input(p.name)) {
        ck.add(ValidationError("conflicting defaults for input '" + p.name + "': " + it->second.second.repr() +
                                   " (block " + it->second.first + ") and " + p.default_value->repr() + " (block " +
                                   path + ")",
                               b.loc(), path, "set the default you want under 'inputs:' in the recipe"));
      }
    }
    for (const auto& o : b.outputs()) block_outputs.insert(o.name);
    for (const auto& c : b.expected_components()) {
      auto it = expected.find(c.name);
      if (it == expected.end()) {
        expected[c.name] = {path, c};
      } else if (!c.type.empty() && !it->second.second.type.empty() && c.type != it->second.second.type) {
        ck.add(ValidationError("conflicting component specs for '" + c.name + "': block " + it->second.first +
                                   " expects " + it->second.second.type + ", block " + path + " expects " + c.type,
                               b.loc(), path, "declare the component under 'components:' with the type both accept"));
      }
    }
  });

  // Components: known types, consistent with what the blocks expect, and everything expected available.
  for (const auto& [name, rc] : recipe_.components) {
    // The type as the recipe's defaults resolve it; "" when it is only known at run time (`auto`).
    std::string type = rc.spec.type;
    bool type_known = true;
    if (!placeholders(type).empty()) {
      for (const auto& var : placeholders(type)) {
        const RecipeInput* in = recipe_.find_input(var);
        if (!in)
          ck.add(ValidationError("component '" + name + "' uses '${" + var + "}' in its type, which is not a recipe input",
                                 rc.loc, {}, "declare it under 'inputs:' with a default type (or auto)"));
        else if (!in->default_value || in->default_value->kind() != Kind::String)
          type_known = false;
        else
          type = substitute_placeholder(type, var, in->default_value->str());
      }
    }
    if (type == kAutoComponentType) {
      type_known = false;
      if (rc.spec.from.empty())
        ck.add(ValidationError("component '" + name + "' has type auto, which needs 'from' (a model folder whose "
                               "model_index.json names the class)",
                               rc.loc));
    }
    const ComponentTypeInfo* info = type_known ? registry_.find_component_type(type) : nullptr;
    if (type_known && !info)
      ck.add(ValidationError("component '" + name + "' has unknown type '" + type + "'", rc.loc, {},
                             did_you_mean(type, registry_.component_types())));
    // A block's component type is its default: the recipe may declare another type of the same category
    // (any scheduler for `scheduler`, any guider for `guider`), as diffusers' ComponentSpecs are defaults.
    auto it = expected.find(name);
    if (info && it != expected.end() && !it->second.second.type.empty() && it->second.second.type != type) {
      const ComponentTypeInfo* want = registry_.find_component_type(it->second.second.type);
      if (!want || want->category != info->category)
        ck.add(ValidationError("component '" + name + "' is declared as " + type + " (" +
                                   component_category_name(info->category) + ") but block " + it->second.first +
                                   " expects " + it->second.second.type +
                                   (want ? std::string(" (") + component_category_name(want->category) + ")" : ""),
                               rc.loc));
    }
    std::vector<const std::string*> fields = {&rc.spec.from, &rc.spec.subfolder, &rc.spec.variant,
                                              &rc.spec.model_type, &rc.spec.config_from};
    for (const auto& l : rc.spec.loras) fields.insert(fields.end(), {&l.file, &l.weight});
    for (const std::string* field : fields)
      for (const auto& var : placeholders(*field))
        if (!recipe_.find_input(var))
          ck.add(ValidationError("component '" + name + "' uses '${" + var + "}', which is not a recipe input", rc.loc,
                                 {}, "declare it under 'inputs:' (e.g. with a default path)"));
    if (!rc.spec.loras.empty() && info && !info->accepts_loras)
      ck.add(ValidationError("component '" + name + "' (" + type + ") has loras, but " + type +
                                 " does not take LoRAs",
                             rc.loc, {}, "give loras to the UNet or the CLIP text encoders"));
    for (const auto& l : rc.spec.loras) {
      if (!placeholders(l.weight).empty()) continue;
      char* end = nullptr;
      std::strtod(l.weight.c_str(), &end);
      if (l.weight.empty() || *end != '\0')
        ck.add(ValidationError("component '" + name + "': LoRA weight '" + l.weight + "' of " + l.file +
                                   " is not a number",
                               rc.loc, {}, "write weight: 0.8"));
    }
  }
  for (const auto& [name, ps] : expected) {
    if (recipe_.components.count(name)) continue;
    const ComponentSpec& c = ps.second;
    if (c.creation == Creation::FromConfig && !c.type.empty()) {
      if (!registry_.find_component_type(c.type))
        ck.add(ValidationError("block " + ps.first + " expects component '" + name + "' of unknown type '" + c.type + "'",
                               {recipe_.file}, ps.first, did_you_mean(c.type, registry_.component_types())));
      continue;
    }
    ck.add(ValidationError("block " + ps.first + " needs component '" + name + "'" +
                               (c.type.empty() ? "" : " (" + c.type + ")") + ", which the recipe does not declare",
                           {recipe_.file}, ps.first, "add it under 'components:' with 'type' and 'from'"));
  }

  // Configs: each recipe config is declared by a block, with a value of the declared kind.
  std::map<std::string, ConfigSpec> declared_configs;
  for (const auto& c : root_->expected_configs()) declared_configs.emplace(c.name, c);
  std::vector<std::string> config_names;
  for (const auto& kv : declared_configs) config_names.push_back(kv.first);
  for (const auto& [name, rc] : recipe_.configs) {
    auto it = declared_configs.find(name);
    if (it == declared_configs.end()) {
      std::string hint = did_you_mean(name, config_names);
      ck.add(ValidationError("config '" + name + "' is set, but no block declares it", rc.loc, {},
                             hint.empty() ? (config_names.empty() ? "no block of this recipe takes configs" : "") : hint));
    } else if (!it->second.default_value.is_none() && !kind_accepts(it->second.default_value.kind(), rc.value.kind())) {
      ck.add(ValidationError("config '" + name + "' should be " + kind_name(it->second.default_value.kind()) + " but is " +
                                 kind_name(rc.value.kind()) + " (" + rc.value.repr() + ")",
                             rc.loc));
    }
  }

  // Recipe inputs: defaults of the right kind; each one read by something.
  std::set<std::string> used_by_components;
  for (const auto& [name, rc] : recipe_.components)
  {
    std::vector<const std::string*> fields = {&rc.spec.from, &rc.spec.subfolder, &rc.spec.variant, &rc.spec.type,
                                              &rc.spec.model_type, &rc.spec.config_from};
    for (const auto& l : rc.spec.loras) fields.insert(fields.end(), {&l.file, &l.weight});
    for (const std::string* field : fields)
      for (const auto& var : placeholders(*field)) used_by_components.insert(var);
  }
  std::set<std::string> triggers;
  walk_blocks(*root_, [&](const std::string&, const Block& b, const std::vector<const Block*>&) {
    if (!b.trigger().empty()) triggers.insert(b.trigger());
  });
  std::vector<std::string> readable(block_inputs.begin(), block_inputs.end());
  for (const auto& in : recipe_.inputs) {
    if (!block_inputs.count(in.name) && !used_by_components.count(in.name) && !triggers.count(in.name)) {
      ck.add(ValidationError("input '" + in.name + "' is declared, but no block reads it", in.loc, {},
                             did_you_mean(in.name, readable)));
      continue;
    }
    if (!in.default_value) continue;
    walk_blocks(*root_, [&](const std::string& path, const Block& b, const std::vector<const Block*>&) {
      if (b.kind() != BlockKind::Leaf) return;
      for (const auto& p : b.inputs())
        if (p.name == in.name && !kind_accepts(p.kind, in.default_value->kind()) &&
            !(p.kind == Kind::StringList && in.default_value->kind() == Kind::String))
          ck.add(ValidationError("default of input '" + in.name + "' is " + kind_name(in.default_value->kind()) +
                                     " (" + in.default_value->repr() + "), but block " + path + " reads it as " +
                                     kind_name(p.kind),
                                 in.loc, {}));
    });
  }

  // Auto-block triggers must be something a caller or a block can supply.
  std::set<std::string> suppliable = block_inputs;
  suppliable.insert(block_outputs.begin(), block_outputs.end());
  for (const auto& in : recipe_.inputs) suppliable.insert(in.name);
  std::vector<std::string> supp_list(suppliable.begin(), suppliable.end());
  walk_blocks(*root_, [&](const std::string& path, const Block& b, const std::vector<const Block*>&) {
    if (b.kind() != BlockKind::Auto) return;
    for (const auto& c : b.children()) {
      if (c->trigger().empty()) continue;
      // A trigger only the branch itself declares is still suppliable by the caller: accept it.
      if (suppliable.count(c->trigger())) continue;
      ck.add(ValidationError("trigger '" + c->trigger() + "' of branch '" + join_path(path, c->name()) +
                                 "' is not an input or output of any block, nor a recipe input: the branch can never run",
                             c->loc(), join_path(path, c->name()), did_you_mean(c->trigger(), supp_list)));
    }
  });

  // Workflows: their inputs are known names; each workflow's execution has every required input.
  for (const auto& [name, wf] : recipe_.workflows)
    for (const auto& in : wf.inputs)
      if (!block_inputs.count(in) && !recipe_.find_input(in) && !triggers.count(in))
        ck.add(ValidationError("workflow '" + name + "' names input '" + in + "', which no block reads", wf.loc, {},
                               did_you_mean(in, readable)));
  if (recipe_.workflows.empty()) {
    ck.run_scenario("", {});
  } else {
    for (const auto& [name, wf] : recipe_.workflows) ck.run_scenario(name, wf.inputs);
  }
  return errors;
}

}  // namespace tessera
