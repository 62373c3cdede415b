#pragma once
/// Pipeline: a recipe built into blocks and components, statically validated before any weight is
/// read, planned per workflow, and run.
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <tessera/block.h>
#include <tessera/components.h>
#include <tessera/recipe.h>
#include <tessera/registry.h>

namespace tessera {

/// One block of an execution plan.
struct PlanEntry {
  std::string path;      ///< dotted path
  std::string block_id;  ///< registry id of the leaf
  std::string loop;      ///< innermost enclosing loop's path, "" when none
};

/// What a set of present inputs selects: the flattened leaves in order and the components they need.
struct Plan {
  std::string workflow;                 ///< "" when planned from explicit inputs
  std::vector<std::string> present;     ///< inputs assumed present
  std::vector<PlanEntry> blocks;
  std::vector<std::string> components;  ///< names, in first-use order
  std::vector<std::string> skipped;     ///< composite paths that select nothing
};

struct BuildOptions {
  /// Shares loaded components between pipelines; a fresh one when null.
  std::shared_ptr<ComponentsManager> manager;
  /// Loads a plugin into the registry (set by the caller that links the plugin loader).
  std::function<void(const std::string& path, const SourceLoc& where, Registry& registry)> load_plugin;
};

struct RunOptions {
  std::vector<ExecObserver*> observers;
  std::vector<StepCallback> step_callbacks;
  /// Resume right after this block path with `on_resume` injecting the state (checkpoint load).
  std::string resume_after;
  std::function<void(PipelineState&)> on_resume;
  /// Unload each pretrained component once the last top-level block that uses it has finished (the text
  /// encoders before denoising, the UNet before decoding), so their memory is free for what follows. Off by
  /// default (a pipeline run again would reload them); `tessera run` turns it on.
  bool release_components_after_last_use = false;
};

class Pipeline {
 public:
  /// Builds blocks from the recipe via the registry (plugins first). Throws ValidationErrors with
  /// every unknown id / bad param it finds.
  static std::unique_ptr<Pipeline> from_recipe(Recipe recipe, Registry& registry, BuildOptions options = {});

  /// Every static problem (no weights are read): unknown component types, unsatisfied inputs per
  /// workflow, kind conflicts, duplicate producers, conflicting components/defaults, triggers nothing supplies…
  std::vector<ValidationError> problems() const;
  /// Throws ValidationErrors when problems() is not empty.
  void validate() const;

  /// The execution plan for a named workflow (ValidationError on an unknown name, with did-you-mean).
  Plan plan(const std::string& workflow) const;
  /// The execution plan when exactly `present` inputs are given.
  Plan plan_for_inputs(const std::set<std::string>& present) const;

  /// Every input name a caller may set (recipe inputs and block inputs), sorted.
  std::vector<std::string> input_names() const;
  /// The kind of input `name` (recipe declaration, else the blocks' declaration); InputError if unknown.
  Kind input_kind(const std::string& name) const;
  /// Parses `--set name=text` with the input's kind: numbers, lists, booleans and strings as parse_value, and for
  /// an image input a PNG or JPEG file path (read_image). The one parser the CLI, the C API and bindings share.
  Value parse_input(const std::string& name, const std::string& text) const;

  /// Runs the pipeline: recipe defaults, then `inputs`; checks required inputs before any block runs.
  PipelineState run(const ValueMap& inputs, const RunOptions& options = {});

  const Block& root() const { return *root_; }
  const Recipe& recipe() const { return recipe_; }
  const Registry& registry() const { return registry_; }
  Components& components() { return *components_; }
  /// Component specs after `${input}` substitution with the given values.
  std::vector<ComponentSpec> resolved_components(const ValueMap& inputs) const;

 private:
  Pipeline(Recipe recipe, Registry& registry, std::shared_ptr<ComponentsManager> manager);
  BlockPtr build_node(const RecipeNode& node, const std::string& path, std::vector<ValidationError>& errors);
  void walk_plan(const Block& block, const std::string& path, const std::string& loop, PipelineState& known,
                 Plan& plan) const;

  Recipe recipe_;
  Registry& registry_;
  BlockPtr root_;
  std::unique_ptr<Components> components_;
};

/// Formats a plan as text: one dotted path per line, loop bodies indented, then the components.
std::string format_plan(const Plan& plan);

}  // namespace tessera
