#pragma once
/// Recipes: the YAML format that assembles a pipeline. Parsing keeps every node's file:line, resolves
/// `extends` with `remove`/`replace`/`insert` edits by dotted path, and treats the file as untrusted
/// (bounded size, depth and node count; every failure is a RecipeError naming file:line).
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <tessera/block.h>
#include <tessera/error.h>
#include <tessera/spec.h>
#include <tessera/value.h>

namespace tessera {

/// The recipe format version this build reads.
constexpr int kRecipeVersion = 1;

/// One node of the `blocks:` tree.
struct RecipeNode {
  std::string name;
  BlockKind kind = BlockKind::Leaf;
  std::string block_id;      ///< leaf: registry id
  ValueMap params;           ///< leaf: construction params
  std::string trigger;       ///< branch of an auto block: runs when this input is present
  std::string description;
  LoopOptions loop;          ///< loop
  std::string selector;      ///< conditional: registered selector id
  std::string select_by;     ///< conditional: string input whose value names the branch
  std::string default_child; ///< conditional: branch when the selector picks none
  std::vector<RecipeNode> children;
  SourceLoc loc;
};

/// An entry of `inputs:`: a pipeline input with an optional default and kind.
struct RecipeInput {
  std::string name;
  std::optional<Kind> kind;
  std::optional<Value> default_value;
  bool required = false;
  std::string description;
  SourceLoc loc;
  std::string origin_dir;  ///< folder of the recipe file that set the default (relative paths resolve there)
};

struct RecipeComponent {
  ComponentSpec spec;
  SourceLoc loc;
  std::string origin_dir;
};

struct RecipeWorkflow {
  std::string name;
  std::vector<std::string> inputs;  ///< inputs present in this workflow
  std::string description;
  SourceLoc loc;
};

struct RecipeConfig {
  Value value;
  SourceLoc loc;
};

struct RecipePlugin {
  std::string path;  ///< resolved against the recipe's folder
  SourceLoc loc;
};

/// A parsed recipe (after extends and edits).
struct Recipe {
  int version = kRecipeVersion;
  std::string name;
  std::string description;
  std::string file;                       ///< the file given to load_recipe
  std::vector<std::string> extends_chain; ///< base files, nearest first
  std::vector<RecipePlugin> plugins;
  std::map<std::string, RecipeComponent> components;
  std::vector<RecipeInput> inputs;        ///< in file order
  std::map<std::string, RecipeConfig> configs;
  std::map<std::string, RecipeWorkflow> workflows;
  RecipeNode root;                        ///< sequential, name ""

  const RecipeInput* find_input(const std::string& name) const;
};

/// Bounds that keep loading an untrusted file cheap.
struct RecipeLimits {
  size_t max_file_bytes = 1 << 20;  ///< 1 MiB
  size_t max_nodes = 100000;        ///< YAML nodes visited (aliases count each time they are used)
  int max_depth = 48;               ///< nesting of YAML collections
  int max_extends = 16;             ///< length of an extends chain
};

/// Loads and parses a recipe file (with its extends chain). Throws RecipeError.
Recipe load_recipe(const std::string& path, const RecipeLimits& limits = {});
/// Parses recipe text; `file_name` is used in messages and to resolve relative paths.
Recipe parse_recipe(const std::string& text, const std::string& file_name, const RecipeLimits& limits = {});

/// The node at a dotted path ("denoise.loop.step"), or nullptr.
const RecipeNode* find_node(const RecipeNode& root, const std::string& dotted);
/// All dotted paths of the tree (for did-you-mean).
std::vector<std::string> node_paths(const RecipeNode& root);

}  // namespace tessera
