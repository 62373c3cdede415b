#pragma once
/// Blocks: leaf blocks run code; sequential, loop, auto and conditional blocks compose them
/// with diffusers' aggregation rules (see ARCHITECTURE.md §3).
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <tessera/error.h>
#include <tessera/spec.h>
#include <tessera/state.h>

namespace tessera {

class Components;
class Block;
using BlockPtr = std::shared_ptr<Block>;

/// Progress of a loop block, passed to step callbacks.
struct StepInfo {
  std::string loop_path;  ///< dotted path of the loop block
  int64_t step = 0;       ///< 0-based iteration index
  int64_t total = 0;      ///< number of iterations
  const PipelineState* state = nullptr;
};

/// Watches a run at block boundaries (traces, checkpoints, progress bars).
class ExecObserver {
 public:
  virtual ~ExecObserver() = default;
  virtual void on_block_start(const std::string& path, const Block& block, PipelineState& state) {}
  virtual void on_block_end(const std::string& path, const Block& block, PipelineState& state) {}
  virtual void on_step_end(const StepInfo& step) {}
};

/// A step callback; return false to cancel the run (CancelledError).
using StepCallback = std::function<bool(const StepInfo&)>;

/// What a run needs besides the state: components, observers, callbacks.
struct ExecContext {
  Components* components = nullptr;
  std::vector<ExecObserver*> observers;
  std::vector<StepCallback> step_callbacks;
  /// When set, blocks are skipped up to and including this path (a checkpoint was loaded there);
  /// `on_resume` is called at that boundary to inject the state.
  std::string resume_after;
  std::function<void(PipelineState&)> on_resume;
};

/// Joins a parent path and a child name with a dot.
std::string join_path(const std::string& parent, const std::string& name);

/// Base of all blocks.
class Block {
 public:
  virtual ~Block() = default;
  virtual BlockKind kind() const = 0;
  /// Registry id for leaves ("common.scale"), the kind name for composites.
  virtual std::string type_id() const = 0;
  virtual std::string description() const = 0;

  /// Aggregated interface (for composites: by diffusers' rules).
  virtual std::vector<InputParam> inputs() const = 0;
  /// Every output this block may produce.
  virtual std::vector<OutputParam> outputs() const = 0;
  /// Outputs produced on every run (skippable branches produce none).
  virtual std::vector<OutputParam> guaranteed_outputs() const { return outputs(); }
  virtual std::vector<ComponentSpec> expected_components() const = 0;
  virtual std::vector<ConfigSpec> expected_configs() const = 0;

  /// Runs the block at `path` (notifies observers, honours resume).
  void execute(ExecContext& ctx, PipelineState& state, const std::string& path) const;

  const std::string& name() const { return name_; }
  void set_name(std::string n) { name_ = std::move(n); }
  const SourceLoc& loc() const { return loc_; }
  void set_loc(SourceLoc l) { loc_ = std::move(l); }
  /// Trigger input for a branch of an auto block ("" = default branch).
  const std::string& trigger() const { return trigger_; }
  void set_trigger(std::string t) { trigger_ = std::move(t); }

  /// Children of composites; empty for leaves.
  virtual const std::vector<BlockPtr>& children() const;

 protected:
  virtual void execute_impl(ExecContext& ctx, PipelineState& state, const std::string& path) const = 0;

 private:
  std::string name_;
  std::string trigger_;
  SourceLoc loc_;
};

/// A block with code: declares a BlockSpec and implements run() against a BlockState.
class LeafBlock : public Block {
 public:
  BlockKind kind() const override { return BlockKind::Leaf; }
  std::string type_id() const override { return cached_spec().id; }
  std::string description() const override { return cached_spec().description; }
  std::vector<InputParam> inputs() const override { return cached_spec().inputs; }
  std::vector<OutputParam> outputs() const override { return cached_spec().outputs; }
  std::vector<ComponentSpec> expected_components() const override { return cached_spec().components; }
  std::vector<ConfigSpec> expected_configs() const override { return cached_spec().configs; }

  /// The block's declaration. Called once; the result is cached.
  virtual BlockSpec spec() const = 0;
  virtual void run(Components& components, BlockState& state) const = 0;
  const BlockSpec& cached_spec() const;

 protected:
  void execute_impl(ExecContext& ctx, PipelineState& state, const std::string& path) const override;

 private:
  mutable std::shared_ptr<const BlockSpec> spec_;
};

/// Base of the composite kinds.
class CompositeBlock : public Block {
 public:
  CompositeBlock(std::vector<BlockPtr> children, std::string description);
  const std::vector<BlockPtr>& children() const override { return children_; }
  std::string description() const override { return description_; }
  std::vector<ComponentSpec> expected_components() const override;
  std::vector<ConfigSpec> expected_configs() const override;
  const Block* child(const std::string& name) const;

 protected:
  std::vector<BlockPtr> children_;
  std::string description_;
};

/// Runs children in order. Inputs: children's inputs minus names guaranteed by earlier children;
/// required = union.
class SequentialBlocks : public CompositeBlock {
 public:
  using CompositeBlock::CompositeBlock;
  BlockKind kind() const override { return BlockKind::Sequential; }
  std::string type_id() const override { return "sequential"; }
  std::vector<InputParam> inputs() const override;
  std::vector<OutputParam> outputs() const override;
  std::vector<OutputParam> guaranteed_outputs() const override;

 protected:
  void execute_impl(ExecContext& ctx, PipelineState& state, const std::string& path) const override;
};

/// What a loop iterates: the elements of an input (`over`) or a count (`count`).
struct LoopOptions {
  std::string over;         ///< input to iterate (tensor 1-D, lists); binds `value_name`
  std::string count;        ///< or: Int input giving the number of iterations
  std::string index_name = "i";
  std::string value_name = "t";
};

/// Runs its children once per iteration; children read the loop variables (`i`, `t`) as inputs.
class LoopSequentialBlocks : public SequentialBlocks {
 public:
  LoopSequentialBlocks(std::vector<BlockPtr> children, std::string description, LoopOptions options);
  BlockKind kind() const override { return BlockKind::Loop; }
  std::string type_id() const override { return "loop"; }
  std::vector<InputParam> inputs() const override;
  const LoopOptions& options() const { return options_; }
  /// Names bound per iteration (index and, with `over`, value).
  std::vector<OutputParam> loop_variables() const;

 protected:
  void execute_impl(ExecContext& ctx, PipelineState& state, const std::string& path) const override;

 private:
  LoopOptions options_;
};

/// Selects a child by the presence of its trigger input (first match; the child without a trigger is
/// the default; no match and no default = skipped). Required inputs = intersection over branches.
class AutoBlocks : public CompositeBlock {
 public:
  using CompositeBlock::CompositeBlock;
  BlockKind kind() const override { return BlockKind::Auto; }
  std::string type_id() const override { return "auto"; }
  std::vector<InputParam> inputs() const override;
  std::vector<OutputParam> outputs() const override;
  std::vector<OutputParam> guaranteed_outputs() const override;
  /// The child that runs when `present` names are available; nullptr = skipped.
  virtual const Block* select(const std::function<bool(const std::string&)>& present,
                              const PipelineState* state) const;
  /// Whether some branch always runs (otherwise the block may be skipped).
  virtual bool has_default() const;
  std::vector<std::string> triggers() const;

 protected:
  void execute_impl(ExecContext& ctx, PipelineState& state, const std::string& path) const override;
};

/// A selector picks the child of a conditional block by name ("" = none/skip).
struct Selector {
  std::string id;
  std::string description;
  std::vector<std::string> reads;  ///< inputs the selector looks at (become optional inputs)
  std::function<std::string(const PipelineState&)> fn;
};

/// Selects a child by a selector: a registered function, or `select_by: name` (the value of a
/// string input names the child). `default_child` runs when the selector picks nothing.
class ConditionalBlocks : public AutoBlocks {
 public:
  ConditionalBlocks(std::vector<BlockPtr> children, std::string description, Selector selector,
                    std::string default_child);
  BlockKind kind() const override { return BlockKind::Conditional; }
  std::string type_id() const override { return "conditional"; }
  std::vector<InputParam> inputs() const override;
  const Block* select(const std::function<bool(const std::string&)>& present,
                      const PipelineState* state) const override;
  bool has_default() const override { return !default_child_.empty(); }
  const Selector& selector() const { return selector_; }
  const std::string& default_child() const { return default_child_; }

 private:
  Selector selector_;
  std::string default_child_;
};

/// Visits `root` and all descendants depth-first in execution order with their dotted paths
/// (the root has path ""); `ancestors` lists the enclosing blocks, outermost first.
void walk_blocks(const Block& root,
                 const std::function<void(const std::string& path, const Block& block,
                                           const std::vector<const Block*>& ancestors)>& visit);

/// Merges `more` into `into` by name (first wins; `required` OR-ed when `union_required`).
void merge_inputs(std::vector<InputParam>& into, const std::vector<InputParam>& more, bool union_required);

}  // namespace tessera
