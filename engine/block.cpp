#include "tessera/block.h"

#include <set>

#include "tessera/components.h"

namespace tessera {

std::string join_path(const std::string& parent, const std::string& name) {
  return parent.empty() ? name : parent + "." + name;
}

namespace {
const std::vector<BlockPtr> kNoChildren;

bool is_inside(const std::string& target, const std::string& path) {
  return path.empty() || (target.size() > path.size() && target.compare(0, path.size(), path) == 0 &&
                          target[path.size()] == '.');
}
}  // namespace

const std::vector<BlockPtr>& Block::children() const { return kNoChildren; }

void Block::execute(ExecContext& ctx, PipelineState& state, const std::string& path) const {
  if (!ctx.resume_after.empty()) {
    if (path == ctx.resume_after) {
      // This block's results come from the checkpoint instead of running it.
      ctx.resume_after.clear();
      if (ctx.on_resume) ctx.on_resume(state);
      return;
    }
    if (is_inside(ctx.resume_after, path)) {
      execute_impl(ctx, state, path);  // descend to the resume point
      return;
    }
    return;  // entirely before the resume point
  }
  for (auto* o : ctx.observers) o->on_block_start(path, *this, state);
  execute_impl(ctx, state, path);
  for (auto* o : ctx.observers) o->on_block_end(path, *this, state);
}

namespace {
void walk_rec(const Block& b, const std::string& path, std::vector<const Block*>& ancestors,
              const std::function<void(const std::string&, const Block&, const std::vector<const Block*>&)>& visit) {
  visit(path, b, ancestors);
  ancestors.push_back(&b);
  for (const auto& c : b.children()) walk_rec(*c, join_path(path, c->name()), ancestors, visit);
  ancestors.pop_back();
}
}  // namespace

void walk_blocks(const Block& root,
                 const std::function<void(const std::string&, const Block&, const std::vector<const Block*>&)>& visit) {
  std::vector<const Block*> ancestors;
  walk_rec(root, "", ancestors, visit);
}

// ---------------------------------------------------------------- leaf

const BlockSpec& LeafBlock::cached_spec() const {
  if (!spec_) spec_ = std::make_shared<const BlockSpec>(spec());
  return *spec_;
}

void LeafBlock::execute_impl(ExecContext& ctx, PipelineState& state, const std::string& path) const {
  const BlockSpec& s = cached_spec();
  BlockState bs(s, state, path);
  try {
    run(*ctx.components, bs);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    std::string what = e.what();
    // c10::Error messages carry a long C++ backtrace after the first line; keep the message.
    auto nl = what.find("\nException raised from");
    if (nl != std::string::npos) what = what.substr(0, nl);
    throw ExecutionError("block " + s.id + " failed: " + what, loc(), path);
  }
  bs.commit(state);
}

// ---------------------------------------------------------------- composites

void merge_inputs(std::vector<InputParam>& into, const std::vector<InputParam>& more, bool union_required) {
  for (const auto& p : more) {
    bool found = false;
    for (auto& q : into) {
      if (q.name != p.name) continue;
      found = true;
      if (union_required && p.required) {
        q.required = true;
        q.default_value.reset();
      }
      if (!q.default_value && p.default_value && !q.required) q.default_value = p.default_value;
      if (q.description.empty()) q.description = p.description;
      break;
    }
    if (!found) into.push_back(p);
  }
}

CompositeBlock::CompositeBlock(std::vector<BlockPtr> children, std::string description)
    : children_(std::move(children)), description_(std::move(description)) {}

std::vector<ComponentSpec> CompositeBlock::expected_components() const {
  std::vector<ComponentSpec> out;
  std::set<std::string> seen;
  for (const auto& c : children_)
    for (auto& spec : c->expected_components())
      if (seen.insert(spec.name).second) out.push_back(std::move(spec));
  return out;
}

std::vector<ConfigSpec> CompositeBlock::expected_configs() const {
  std::vector<ConfigSpec> out;
  std::set<std::string> seen;
  for (const auto& c : children_)
    for (auto& spec : c->expected_configs())
      if (seen.insert(spec.name).second) out.push_back(std::move(spec));
  return out;
}

const Block* CompositeBlock::child(const std::string& name) const {
  for (const auto& c : children_)
    if (c->name() == name) return c.get();
  return nullptr;
}

// Sequential

std::vector<InputParam> SequentialBlocks::inputs() const {
  std::vector<InputParam> out;
  std::set<std::string> produced;
  for (const auto& c : children_) {
    std::vector<InputParam> mine;
    for (auto& p : c->inputs())
      if (!produced.count(p.name)) mine.push_back(std::move(p));
    merge_inputs(out, mine, /*union_required=*/true);
    for (const auto& o : c->guaranteed_outputs()) produced.insert(o.name);
  }
  return out;
}

namespace {
void merge_outputs(std::vector<OutputParam>& into, const std::vector<OutputParam>& more) {
  for (const auto& o : more) {
    bool found = false;
    for (const auto& q : into) found = found || q.name == o.name;
    if (!found) into.push_back(o);
  }
}
}  // namespace

std::vector<OutputParam> SequentialBlocks::outputs() const {
  std::vector<OutputParam> out;
  for (const auto& c : children_) merge_outputs(out, c->outputs());
  return out;
}

std::vector<OutputParam> SequentialBlocks::guaranteed_outputs() const {
  std::vector<OutputParam> out;
  for (const auto& c : children_) merge_outputs(out, c->guaranteed_outputs());
  return out;
}

void SequentialBlocks::execute_impl(ExecContext& ctx, PipelineState& state, const std::string& path) const {
  for (const auto& c : children_) c->execute(ctx, state, join_path(path, c->name()));
}

// Loop

LoopSequentialBlocks::LoopSequentialBlocks(std::vector<BlockPtr> children, std::string description,
                                           LoopOptions options)
    : SequentialBlocks(std::move(children), std::move(description)), options_(std::move(options)) {}

std::vector<OutputParam> LoopSequentialBlocks::loop_variables() const {
  std::vector<OutputParam> vars{{options_.index_name, Kind::Int, "iteration index"}};
  if (!options_.over.empty())
    vars.push_back({options_.value_name, Kind::Any, "element " + options_.index_name + " of '" + options_.over + "'"});
  return vars;
}

std::vector<InputParam> LoopSequentialBlocks::inputs() const {
  std::vector<InputParam> out;
  if (!options_.over.empty())
    out.push_back({options_.over, Kind::Any, "values the loop iterates over", true});
  else
    out.push_back({options_.count, Kind::Int, "number of loop iterations", true});
  std::set<std::string> vars;
  for (const auto& v : loop_variables()) vars.insert(v.name);
  std::vector<InputParam> body;
  for (auto& p : SequentialBlocks::inputs())
    if (!vars.count(p.name)) body.push_back(std::move(p));
  merge_inputs(out, body, true);
  return out;
}

void LoopSequentialBlocks::execute_impl(ExecContext& ctx, PipelineState& state, const std::string& path) const {
  int64_t n = 0;
  Value over;
  if (!options_.over.empty()) {
    over = state.get(options_.over);
    switch (over.kind()) {
      case Kind::Tensor:
        if (over.tensor().dim() != 1)
          throw ExecutionError("loop input '" + options_.over + "' must be a 1-D tensor, got " + over.repr(), loc(),
                               path);
        n = over.tensor().size(0);
        break;
      case Kind::TensorList: n = static_cast<int64_t>(over.tensor_list().size()); break;
      case Kind::IntList: n = static_cast<int64_t>(over.int_list().size()); break;
      case Kind::FloatList: n = static_cast<int64_t>(over.float_list().size()); break;
      case Kind::StringList: n = static_cast<int64_t>(over.string_list().size()); break;
      default:
        throw ExecutionError("loop input '" + options_.over + "' must be a tensor or a list, got " + over.repr(), loc(),
                             path);
    }
  } else {
    const Value& c = state.get(options_.count);
    if (c.is_none()) throw InputError("loop count '" + options_.count + "' is missing", loc(), path);
    n = c.to_int(options_.count);
    if (n < 0) throw InputError("loop count '" + options_.count + "' is negative (" + std::to_string(n) + ")", loc(), path);
  }
  // Split a tensor once: indexing it every iteration costs about as much as a leaf block call.
  std::vector<at::Tensor> elements;
  if (over.kind() == Kind::Tensor) elements = over.tensor().unbind(0);
  for (int64_t i = 0; i < n; ++i) {
    state.set(options_.index_name, Value(i));
    if (!options_.over.empty()) {
      Value v;
      switch (over.kind()) {
        case Kind::Tensor: v = Value(elements[static_cast<size_t>(i)]); break;
        case Kind::TensorList: v = Value(over.tensor_list()[i]); break;
        case Kind::IntList: v = Value(over.int_list()[i]); break;
        case Kind::FloatList: v = Value(over.float_list()[i]); break;
        default: v = Value(over.string_list()[i]); break;
      }
      state.set(options_.value_name, std::move(v));
    }
    SequentialBlocks::execute_impl(ctx, state, path);
    StepInfo info{path, i, n, &state};
    for (auto* o : ctx.observers) o->on_step_end(info);
    for (const auto& cb : ctx.step_callbacks)
      if (!cb(info))
        throw CancelledError("cancelled by a step callback after step " + std::to_string(i + 1) + " of " +
                                 std::to_string(n),
                             loc(), path);
  }
}

// Auto

bool AutoBlocks::has_default() const {
  for (const auto& c : children_)
    if (c->trigger().empty()) return true;
  return false;
}

std::vector<std::string> AutoBlocks::triggers() const {
  std::vector<std::string> out;
  for (const auto& c : children_)
    if (!c->trigger().empty()) out.push_back(c->trigger());
  return out;
}

std::vector<InputParam> AutoBlocks::inputs() const {
  std::vector<InputParam> out;
  bool first = true;
  std::set<std::string> required_everywhere;
  for (const auto& c : children_) {
    auto ins = c->inputs();
    std::set<std::string> req;
    for (const auto& p : ins)
      if (p.required) req.insert(p.name);
    if (first) {
      required_everywhere = req;
    } else {
      std::set<std::string> both;
      for (const auto& r : required_everywhere)
        if (req.count(r)) both.insert(r);
      required_everywhere = both;
    }
    first = false;
    merge_inputs(out, ins, /*union_required=*/false);
  }
  for (auto& p : out) {
    p.required = has_default() && required_everywhere.count(p.name);
    if (p.required) p.default_value.reset();
  }
  for (const auto& t : triggers()) {
    bool found = false;
    for (const auto& p : out) found = found || p.name == t;
    if (!found) out.push_back({t, Kind::Any, "trigger: selects a branch when present"});
  }
  return out;
}

std::vector<OutputParam> AutoBlocks::outputs() const {
  std::vector<OutputParam> out;
  for (const auto& c : children_) merge_outputs(out, c->outputs());
  return out;
}

std::vector<OutputParam> AutoBlocks::guaranteed_outputs() const {
  if (!has_default() || children_.empty()) return {};
  std::vector<OutputParam> out = children_.front()->guaranteed_outputs();
  for (size_t i = 1; i < children_.size(); ++i) {
    auto g = children_[i]->guaranteed_outputs();
    std::vector<OutputParam> keep;
    for (const auto& o : out) {
      bool found = false;
      for (const auto& q : g) found = found || q.name == o.name;
      if (found) keep.push_back(o);
    }
    out = std::move(keep);
  }
  return out;
}

const Block* AutoBlocks::select(const std::function<bool(const std::string&)>& present,
                                const PipelineState*) const {
  for (const auto& c : children_)
    if (c->trigger().empty() || present(c->trigger())) return c.get();
  return nullptr;
}

void AutoBlocks::execute_impl(ExecContext& ctx, PipelineState& state, const std::string& path) const {
  const Block* chosen = select([&](const std::string& n) { return state.has(n); }, &state);
  if (!chosen) return;  // no trigger present and no default: skipped
  chosen->execute(ctx, state, join_path(path, chosen->name()));
}

// Conditional

ConditionalBlocks::ConditionalBlocks(std::vector<BlockPtr> children, std::string description, Selector selector,
                                     std::string default_child)
    : AutoBlocks(std::move(children), std::move(description)),
      selector_(std::move(selector)),
      default_child_(std::move(default_child)) {}

std::vector<InputParam> ConditionalBlocks::inputs() const {
  std::vector<InputParam> out;
  bool first = true;
  std::set<std::string> required_everywhere;
  for (const auto& c : children_) {
    auto ins = c->inputs();
    std::set<std::string> req;
    for (const auto& p : ins)
      if (p.required) req.insert(p.name);
    if (first) required_everywhere = req;
    else {
      std::set<std::string> both;
      for (const auto& r : required_everywhere)
        if (req.count(r)) both.insert(r);
      required_everywhere = both;
    }
    first = false;
    merge_inputs(out, ins, false);
  }
  bool always_runs = !default_child_.empty();
  for (auto& p : out) {
    p.required = always_runs && required_everywhere.count(p.name);
    if (p.required) p.default_value.reset();
  }
  for (const auto& r : selector_.reads) {
    bool found = false;
    for (const auto& p : out) found = found || p.name == r;
    if (!found) out.push_back({r, Kind::Any, "read by selector " + selector_.id});
  }
  return out;
}

const Block* ConditionalBlocks::select(const std::function<bool(const std::string&)>& present,
                                       const PipelineState* state) const {
  std::string chosen;
  if (state && selector_.fn) chosen = selector_.fn(*state);
  if (chosen.empty()) chosen = default_child_;
  if (chosen.empty()) return nullptr;
  const Block* b = child(chosen);
  if (!b) {
    std::vector<std::string> names;
    for (const auto& c : children_) names.push_back(c->name());
    throw ExecutionError("selector " + selector_.id + " chose '" + chosen + "', which is not a branch of this block",
                         loc(), name(), did_you_mean(chosen, names));
  }
  return b;
}

}  // namespace tessera
