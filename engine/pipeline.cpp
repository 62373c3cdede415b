#include "tessera/pipeline.h"

#include "tessera/image_io.h"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <ATen/core/grad_mode.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <fstream>
#include <sstream>

namespace tessera {

namespace fs = std::filesystem;

Pipeline::Pipeline(Recipe recipe, Registry& registry, std::shared_ptr<ComponentsManager> manager)
    : recipe_(std::move(recipe)),
      registry_(registry),
      components_(std::make_unique<Components>(registry, std::move(manager))) {}

std::unique_ptr<Pipeline> Pipeline::from_recipe(Recipe recipe, Registry& registry, BuildOptions options) {
  for (const auto& p : recipe.plugins) {
    if (!options.load_plugin)
      throw PluginError("recipe lists plugin '" + p.path + "' but this program cannot load plugins", p.loc);
    options.load_plugin(p.path, p.loc, registry);
  }
  std::unique_ptr<Pipeline> pipe(new Pipeline(std::move(recipe), registry, options.manager));
  std::vector<ValidationError> errors;
  pipe->root_ = pipe->build_node(pipe->recipe_.root, "", errors);
  if (!errors.empty()) throw ValidationErrors(std::move(errors));
  return pipe;
}

BlockPtr Pipeline::build_node(const RecipeNode& node, const std::string& path, std::vector<ValidationError>& errors) {
  if (node.kind == BlockKind::Leaf) {
    try {
      auto b = registry_.create_block(node.block_id, node.params, node.loc, path);
      b->set_name(node.name);
      b->set_trigger(node.trigger);
      return b;
    } catch (const ValidationError& e) {
      errors.push_back(e);
    } catch (const Error& e) {
      errors.emplace_back(e.message(), node.loc, path, e.hint());
    }
    return nullptr;
  }
  std::vector<BlockPtr> children;
  for (const auto& c : node.children) {
    BlockPtr b = build_node(c, join_path(path, c.name), errors);
    if (b) children.push_back(std::move(b));
  }
  std::string desc = node.description;
  BlockPtr out;
  switch (node.kind) {
    case BlockKind::Sequential: out = std::make_shared<SequentialBlocks>(std::move(children), desc); break;
    case BlockKind::Loop: out = std::make_shared<LoopSequentialBlocks>(std::move(children), desc, node.loop); break;
    case BlockKind::Auto: out = std::make_shared<AutoBlocks>(std::move(children), desc); break;
    case BlockKind::Conditional: {
      Selector sel;
      if (!node.selector.empty()) {
        const Selector* found = registry_.find_selector(node.selector);
        if (!found) {
          errors.emplace_back("unknown selector '" + node.selector + "'", node.loc, path,
                              did_you_mean(node.selector, registry_.selector_ids()));
          return nullptr;
        }
        sel = *found;
      } else {
        std::string input = node.select_by;
        sel.id = "select_by:" + input;
        sel.description = "the value of input '" + input + "' names the branch";
        sel.reads = {input};
        sel.fn = [input](const PipelineState& s) -> std::string {
          const Value& v = s.get(input);
          if (v.is_none()) return {};
          if (v.kind() != Kind::String)
            throw InputError("'" + input + "' selects a branch and must be a string, but is " + kind_name(v.kind()));
          return v.str();
        };
      }
      out = std::make_shared<ConditionalBlocks>(std::move(children), desc, std::move(sel), node.default_child);
      break;
    }
    case BlockKind::Leaf: break;
  }
  out->set_name(node.name);
  out->set_trigger(node.trigger);
  out->set_loc(node.loc);
  return out;
}

void Pipeline::validate() const {
  auto errs = problems();
  if (!errs.empty()) throw ValidationErrors(std::move(errs));
}

// ---------------------------------------------------------------- plan

void Pipeline::walk_plan(const Block& block, const std::string& path, const std::string& loop, PipelineState& known,
                         Plan& plan) const {
  auto note_components = [&](const Block& b) {
    for (const auto& c : b.expected_components()) {
      bool seen = false;
      for (const auto& n : plan.components) seen = seen || n == c.name;
      if (!seen) plan.components.push_back(c.name);
    }
  };
  switch (block.kind()) {
    case BlockKind::Leaf:
      plan.blocks.push_back({path, block.type_id(), loop});
      note_components(block);
      for (const auto& o : block.outputs())
        if (!known.has(o.name)) known.set(o.name, Value(true));
      return;
    case BlockKind::Sequential:
      for (const auto& c : block.children()) walk_plan(*c, join_path(path, c->name()), loop, known, plan);
      return;
    case BlockKind::Loop: {
      const auto& lb = static_cast<const LoopSequentialBlocks&>(block);
      for (const auto& v : lb.loop_variables())
        if (!known.has(v.name)) known.set(v.name, Value(true));
      for (const auto& c : block.children()) walk_plan(*c, join_path(path, c->name()), path, known, plan);
      return;
    }
    case BlockKind::Auto:
    case BlockKind::Conditional: {
      const auto& ab = static_cast<const AutoBlocks&>(block);
      const Block* chosen = ab.select([&](const std::string& n) { return known.has(n); }, &known);
      if (!chosen) {
        plan.skipped.push_back(path.empty() ? "(root)" : path);
        return;
      }
      walk_plan(*chosen, join_path(path, chosen->name()), loop, known, plan);
      return;
    }
  }
}

Plan Pipeline::plan_for_inputs(const std::set<std::string>& present) const {
  Plan plan;
  plan.present.assign(present.begin(), present.end());
  PipelineState known;
  for (const auto& in : recipe_.inputs)
    if (in.default_value) known.set(in.name, *in.default_value);
  for (const auto& n : present)
    if (!known.has(n)) known.set(n, Value(true));
  walk_plan(*root_, "", "", known, plan);
  return plan;
}

Plan Pipeline::plan(const std::string& workflow) const {
  auto it = recipe_.workflows.find(workflow);
  if (it == recipe_.workflows.end()) {
    std::vector<std::string> names;
    for (const auto& kv : recipe_.workflows) names.push_back(kv.first);
    std::string hint = did_you_mean(workflow, names);
    if (hint.empty()) {
      hint = names.empty() ? "this recipe declares no workflows" : "workflows of this recipe:";
      for (const auto& n : names) hint += " " + n;
    }
    throw ValidationError("unknown workflow '" + workflow + "'", {recipe_.file}, {}, hint);
  }
  Plan p = plan_for_inputs({it->second.inputs.begin(), it->second.inputs.end()});
  p.workflow = workflow;
  return p;
}

std::string format_plan(const Plan& plan) {
  std::ostringstream os;
  os << "workflow: " << (plan.workflow.empty() ? "(from inputs)" : plan.workflow) << "\ninputs:";
  for (const auto& p : plan.present) os << ' ' << p;
  os << "\nblocks:\n";
  for (const auto& e : plan.blocks) {
    os << "  ";
    if (!e.loop.empty()) os << "  ";
    os << e.path << "  [" << e.block_id << "]";
    if (!e.loop.empty()) os << "  (each iteration of " << e.loop << ")";
    os << '\n';
  }
  if (!plan.skipped.empty()) {
    os << "skipped:";
    for (const auto& s : plan.skipped) os << ' ' << s;
    os << '\n';
  }
  os << "components:";
  if (plan.components.empty()) os << " (none)";
  for (const auto& c : plan.components) os << ' ' << c;
  os << '\n';
  return os.str();
}

// ---------------------------------------------------------------- inputs

std::vector<std::string> Pipeline::input_names() const {
  std::set<std::string> names;
  for (const auto& in : recipe_.inputs) names.insert(in.name);
  walk_blocks(*root_, [&](const std::string&, const Block& b, const std::vector<const Block*>&) {
    if (b.kind() == BlockKind::Leaf)
      for (const auto& p : b.inputs())
        if (p.kwargs_type.empty() || p.kind != Kind::Map) names.insert(p.name);
  });
  for (const auto& p : root_->inputs()) names.insert(p.name);
  return {names.begin(), names.end()};
}

Kind Pipeline::input_kind(const std::string& name) const {
  if (const RecipeInput* in = recipe_.find_input(name)) {
    if (in->kind) return *in->kind;
  }
  Kind found = Kind::None;
  walk_blocks(*root_, [&](const std::string&, const Block& b, const std::vector<const Block*>&) {
    if (found != Kind::None || b.kind() != BlockKind::Leaf) return;
    for (const auto& p : b.inputs())
      if (p.name == name && p.kind != Kind::Any) found = p.kind;
  });
  if (found != Kind::None) return found;
  if (const RecipeInput* in = recipe_.find_input(name)) {
    if (in->default_value) return in->default_value->kind();
    return Kind::Any;
  }
  for (const auto& p : root_->inputs())
    if (p.name == name) return p.kind;
  throw InputError("this pipeline has no input named '" + name + "'", {recipe_.file}, {},
                   [&] {
                     std::string h = did_you_mean(name, input_names());
                     return h.empty() ? "see `tessera recipe doc " + recipe_.file + "` for its inputs" : h;
                   }());
}

Value Pipeline::parse_input(const std::string& name, const std::string& text) const {
  const Kind kind = input_kind(name);
  if (kind == Kind::Image) return Value(read_image(text));
  return parse_value(kind, text, name);
}

namespace {

/// The class model_index.json in `spec.from` names for the component (key: its subfolder, else its name), as
/// diffusers' DiffusionPipeline.from_pretrained picks each component's class.
std::string model_index_class(const ComponentSpec& spec, const SourceLoc& loc) {
  const fs::path index = fs::path(spec.from) / "model_index.json";
  const std::string key = spec.subfolder.empty() ? spec.name : spec.subfolder;
  std::ifstream in(index);
  if (!in)
    throw ModelLoadError("component '" + spec.name + "' has type auto, but '" + index.string() + "' cannot be read",
                         SourceLoc{index.string()}, {}, "check the model folder, or name the type in the recipe");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw ModelLoadError(std::string("model_index.json is not valid JSON: ") + e.what(), SourceLoc{index.string()});
  }
  if (!j.is_object() || !j.contains(key) || !j[key].is_array() || j[key].size() != 2 || !j[key][1].is_string())
    throw ModelLoadError("model_index.json has no [library, class] entry '" + key + "' for component '" + spec.name +
                             "' (type auto)",
                         SourceLoc{index.string()}, {}, "name the type in the recipe (declared at " + loc.str() + ")");
  return j[key][1].get<std::string>();
}

/// The class model_index.json in `folder` names for `key`, or "" when there is no such file or entry (a folder
/// that is not a diffusers pipeline folder, e.g. one component's own folder).
/// `key` "_class_name" gives the pipeline class.
std::string model_index_entry(const fs::path& folder, const std::string& key) {
  std::ifstream in(folder / "model_index.json");
  if (!in) return {};
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains(key)) return {};
  if (j[key].is_string()) return j[key].get<std::string>();
  if (!j[key].is_array() || j[key].size() != 2 || !j[key][1].is_string()) return {};
  return j[key][1].get<std::string>();
}

/// Whether a model folder's class `found` can stand for the recipe's `wanted` (the fast and slow tokenizers read
/// the same files).
bool same_component_class(const std::string& wanted, const std::string& found) {
  auto base = [](std::string s) {
    if (s.size() > 4 && s.compare(s.size() - 4, 4, "Fast") == 0) s.resize(s.size() - 4);
    return s;
  };
  return wanted == found || base(wanted) == base(found);
}

/// For each top-level block of the plan, the pretrained components whose last use is inside it.
std::map<std::string, std::vector<std::string>> last_uses(const Block& root, const Plan& plan,
                                                          const std::vector<ComponentSpec>& specs) {
  std::map<std::string, const Block*> by_path;
  walk_blocks(root, [&](const std::string& path, const Block& b, const std::vector<const Block*>&) {
    by_path[path] = &b;
  });
  std::map<std::string, std::string> last;  // component → top-level block path
  for (const auto& e : plan.blocks) {
    auto it = by_path.find(e.path);
    if (it == by_path.end()) continue;
    for (const auto& c : it->second->expected_components()) last[c.name] = e.path.substr(0, e.path.find('.'));
  }
  std::map<std::string, std::vector<std::string>> out;
  for (const auto& spec : specs)
    if (spec.creation == Creation::FromPretrained && last.count(spec.name)) out[last[spec.name]].push_back(spec.name);
  return out;
}

/// Unloads components after the block where they are used for the last time (RunOptions).
class ReleaseObserver final : public ExecObserver {
 public:
  ReleaseObserver(Components& components, std::map<std::string, std::vector<std::string>> release_after)
      : components_(components), release_after_(std::move(release_after)) {}
  void on_block_end(const std::string& path, const Block&, PipelineState&) override {
    auto it = release_after_.find(path);
    if (it == release_after_.end()) return;
    for (const auto& name : it->second)
      if (components_.is_loaded(name)) {
        spdlog::debug("{}: last use of component '{}' done, unloading it", path, name);
        components_.unload(name);
      }
  }

 private:
  Components& components_;
  std::map<std::string, std::vector<std::string>> release_after_;
};

}  // namespace

std::vector<ComponentSpec> Pipeline::resolved_components(const ValueMap& inputs) const {
  auto substitute = [&](const std::string& s, bool& from_recipe) {
    std::string out;
    size_t i = 0;
    while (i < s.size()) {
      size_t b = s.find("${", i);
      if (b == std::string::npos) {
        out += s.substr(i);
        break;
      }
      size_t e = s.find('}', b);
      if (e == std::string::npos) {
        out += s.substr(i);
        break;
      }
      out += s.substr(i, b - i);
      std::string var = s.substr(b + 2, e - b - 2);
      auto it = inputs.find(var);
      if (it != inputs.end()) {
        out += it->second.kind() == Kind::String ? it->second.str() : it->second.repr();
        from_recipe = false;
      } else if (const RecipeInput* in = recipe_.find_input(var); in && in->default_value) {
        out += in->default_value->kind() == Kind::String ? in->default_value->str() : in->default_value->repr();
      } else {
        throw InputError("component path uses '${" + var + "}', which has no value", {recipe_.file}, {},
                         "give it with --set " + var + "=…");
      }
      i = e + 1;
    }
    return out;
  };
  std::vector<ComponentSpec> out;
  for (const auto& [name, rc] : recipe_.components) {
    ComponentSpec spec = rc.spec;
    bool from_recipe = true;
    spec.from = substitute(spec.from, from_recipe);
    spec.subfolder = substitute(spec.subfolder, from_recipe);
    spec.variant = substitute(spec.variant, from_recipe);
    // A relative folder written in the recipe resolves against the recipe's folder; one given on the
    // command line resolves against the working directory.
    if (!spec.from.empty() && from_recipe && fs::path(spec.from).is_relative())
      spec.from = (fs::path(rc.origin_dir) / spec.from).lexically_normal().string();
    bool hint_from_recipe = true;
    spec.model_type = substitute(spec.model_type, hint_from_recipe);
    bool config_from_recipe = true;
    spec.config_from = substitute(spec.config_from, config_from_recipe);
    if (!spec.config_from.empty() && config_from_recipe && fs::path(spec.config_from).is_relative())
      spec.config_from = (fs::path(rc.origin_dir) / spec.config_from).lexically_normal().string();
    if (spec.from.empty() || !registry_.model_source(spec)) {
      spec.model_type.clear();  // single-file hints mean nothing for a folder: keep load ids shared
      spec.config_from.clear();
    }
    for (auto& lora : spec.loras) {
      bool file_from_recipe = true, weight_from_recipe = true;
      lora.file = substitute(lora.file, file_from_recipe);
      lora.weight = substitute(lora.weight, weight_from_recipe);
      if (file_from_recipe && fs::path(lora.file).is_relative())
        lora.file = (fs::path(rc.origin_dir) / lora.file).lexically_normal().string();
    }
    bool type_from_recipe = true;
    spec.type = substitute(spec.type, type_from_recipe);
    if (spec.type == kAutoComponentType) {
      ComponentSpec lookup = spec;  // a single file's classes are its configs folder's
      if (auto source = registry_.model_source(spec)) lookup.from = source->config_dir;
      spec.type = model_index_class(lookup, rc.loc);
    }
    if (!registry_.find_component_type(spec.type))
      throw InputError("component '" + name + "' has unknown type '" + spec.type + "'",
                       type_from_recipe ? rc.loc : SourceLoc{recipe_.file}, {},
                       did_you_mean(spec.type, registry_.component_types()));
    out.push_back(std::move(spec));
  }
  // Components that blocks expect and the recipe does not declare: created from the block's spec.
  std::set<std::string> declared;
  for (const auto& s : out) declared.insert(s.name);
  for (const auto& c : root_->expected_components())
    if (!declared.count(c.name)) out.push_back(c);
  return out;
}

// ---------------------------------------------------------------- run

PipelineState Pipeline::run(const ValueMap& inputs, const RunOptions& options) {
  c10::InferenceMode inference_guard;
  PipelineState state;
  for (const auto& in : recipe_.inputs)
    if (in.default_value) state.set(in.name, *in.default_value);
  std::vector<std::string> names = input_names();
  std::set<std::string> name_set(names.begin(), names.end());
  for (const auto& [name, v] : inputs) {
    if (!name_set.count(name))
      throw InputError("this pipeline has no input named '" + name + "'", {recipe_.file}, {},
                       did_you_mean(name, names));
    Kind k = input_kind(name);
    state.set(name, v.coerced(k, name));
  }
  std::vector<std::string> missing;
  for (const auto& in : recipe_.inputs)
    if (in.required && !state.has(in.name)) missing.push_back(in.name);
  for (const auto& p : root_->inputs())
    if (p.required && !p.default_value && !state.has(p.name)) {
      bool dup = false;
      for (const auto& m : missing) dup = dup || m == p.name;
      if (!dup) missing.push_back(p.name);
    }
  if (!missing.empty() && options.resume_after.empty()) {
    std::string list, sets;
    for (const auto& m : missing) list += (list.empty() ? "" : ", ") + m, sets += " --set " + m + "=…";
    throw InputError("missing required input" + std::string(missing.size() > 1 ? "s " : " ") + list, {recipe_.file}, {},
                     "give them with" + sets);
  }

  // Components: resolve paths against this run's inputs; from_config ones are created now. The folders of the
  // pretrained components this run's plan uses must exist: a model folder without the UNet fails here, naming
  // both, before any block runs (the weights themselves still load lazily).
  std::vector<ComponentSpec> specs = resolved_components(inputs);
  std::map<std::string, std::vector<std::string>> release_after;  // top-level block path → components
  if (options.resume_after.empty()) {
    std::set<std::string> present;
    for (const auto& n : state.names())
      if (state.has(n)) present.insert(n);
    const Plan plan = plan_for_inputs(present);
    if (options.release_components_after_last_use) release_after = last_uses(*root_, plan, specs);
    // A single-file checkpoint whose weights the recipe would leave partly unused is another family's.
    std::map<std::string, std::set<std::string>> used_parts;  // single file → the components the recipe loads from it
    for (const auto& spec : specs)
      if (spec.creation == Creation::FromPretrained && !spec.from.empty())
        used_parts[spec.from].insert(spec.subfolder.empty() ? spec.name : spec.subfolder);
    for (const auto& spec : specs) {
      if (spec.creation != Creation::FromPretrained || spec.from.empty() || !used_parts.count(spec.from)) continue;
      // (Only the text encoders tell: a recipe may take just the UNet or VAE of a file on purpose, but one that
      // encodes text with the file's first encoder and ignores its second is an SD recipe given an SDXL file.)
      if (auto source = registry_.model_source(spec))
        for (const auto& part : source->components)
          if (part == "text_encoder_2" && used_parts[spec.from].count("text_encoder") && !used_parts[spec.from].count(part))
            throw ModelLoadError(source->description + ", holds a " + part + ", which " + recipe_.file +
                                     " does not use",
                                 {recipe_.file}, {},
                                 "the checkpoint is of another family than this recipe's: use the recipe of its family "
                                 "(e.g. recipes/sdxl for SDXL files), or name the family with --set model_type=…");
      used_parts.erase(spec.from);
    }
    for (const auto& spec : specs) {
      if (spec.creation != Creation::FromPretrained) continue;
      if (std::find(plan.components.begin(), plan.components.end(), spec.name) == plan.components.end()) continue;
      if (spec.from.empty()) {
        // An optional model the recipe names by an input left empty (`from: ${controlnet}`), which this run's
        // inputs need after all.
        auto rc = recipe_.components.find(spec.name);
        const std::string raw = rc == recipe_.components.end() ? std::string() : rc->second.spec.from;
        const std::string var =
            raw.size() > 3 && raw.rfind("${", 0) == 0 && raw.back() == '}' ? raw.substr(2, raw.size() - 3) : "";
        throw InputError("component '" + spec.name + "' (" + spec.type + ") is needed by this run, but its model path" +
                             (raw.empty() ? std::string(" is empty") : " '" + raw + "' is empty"),
                         rc == recipe_.components.end() ? SourceLoc{recipe_.file} : rc->second.loc, {},
                         var.empty() ? "give the component a model folder"
                                     : "give it with --set " + var + "=PATH");
      }
      // A single-file checkpoint: its configs folder stands for the model folder in the checks below.
      const std::optional<ModelSourceInfo> source = registry_.model_source(spec);
      const fs::path folder = source ? fs::path(source->config_dir) : fs::path(spec.from);
      const fs::path dir = spec.subfolder.empty() ? folder : folder / spec.subfolder;
      if (source && !fs::exists(dir))
        throw ModelLoadError("component '" + spec.name + "' (" + spec.type + "): " + source->description +
                                 ", whose configs have no '" + spec.subfolder + "/'",
                             {recipe_.file}, {},
                             "this recipe (" + recipe_.file + ") needs a model of another family; use the recipe of "
                             "the checkpoint's family, or name the family with --set model_type=…");
      if (!fs::exists(dir))
        throw ModelLoadError("component '" + spec.name + "' (" + spec.type + "): '" + dir.string() +
                                 "' does not exist",
                             {recipe_.file}, {},
                             fs::is_directory(spec.from) ? "the model folder '" + spec.from + "' has no '" +
                                                               spec.subfolder + "/' (is it a different kind of model?)"
                                                         : "check the model path");
      // A model or tokenizer whose class the folder's model_index.json names otherwise is another family's (a
      // FLUX folder under the SD3 recipe): say so now instead of failing on weight names later.
      const ComponentTypeInfo* info = registry_.find_component_type(spec.type);
      if (!info || (info->category != ComponentCategory::Model && info->category != ComponentCategory::Tokenizer))
        continue;
      const std::string found = model_index_entry(folder, spec.subfolder.empty() ? spec.name : spec.subfolder);
      if (!found.empty() && !same_component_class(spec.type, found)) {
        const std::string pipeline_class = model_index_entry(folder, "_class_name");
        throw ModelLoadError("component '" + spec.name + "' must be a " + spec.type + ", but the model folder's " +
                                 "model_index.json names " + found + " for '" +
                                 (spec.subfolder.empty() ? spec.name : spec.subfolder) + "'",
                             SourceLoc{(folder / "model_index.json").string()}, {},
                             "this recipe (" + recipe_.file + ") does not fit this model folder" +
                                 std::string(pipeline_class.empty() ? "" : " (a " + pipeline_class + ")") +
                                 ": use the recipe of its family");
      }
    }
  }
  for (auto& spec : specs) components_->add_spec(spec);
  for (const auto& c : root_->expected_configs()) {
    auto it = recipe_.configs.find(c.name);
    components_->set_config(c.name, it != recipe_.configs.end() ? it->second.value.coerced(c.default_value.kind(), c.name)
                                                                : c.default_value);
  }
  components_->create_from_config_components();

  ExecContext ctx;
  ctx.components = components_.get();
  ctx.observers = options.observers;
  ReleaseObserver releaser(*components_, std::move(release_after));
  ctx.observers.push_back(&releaser);
  ctx.step_callbacks = options.step_callbacks;
  ctx.resume_after = options.resume_after;
  ctx.on_resume = options.on_resume;
  root_->execute(ctx, state, "");
  if (!ctx.resume_after.empty())
    throw CheckpointError("the run never reached block '" + ctx.resume_after + "' to resume after it");
  return state;
}

}  // namespace tessera
