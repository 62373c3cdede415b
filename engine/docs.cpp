#include "engine/docs.h"

#include <sstream>

namespace tessera {

namespace {
std::string input_line(const InputParam& p) {
  std::ostringstream os;
  os << "- `" << p.name << "` (" << kind_name(p.kind) << ")";
  if (p.required) os << " **required**";
  if (p.default_value) os << ", default `" << p.default_value->repr() << "`";
  if (!p.kwargs_type.empty()) os << ", group `" << p.kwargs_type << "`";
  if (!p.description.empty()) os << ": " << p.description;
  os << '\n';
  return os.str();
}

std::string output_line(const OutputParam& p) {
  std::ostringstream os;
  os << "- `" << p.name << "` (" << kind_name(p.kind) << ")";
  if (!p.kwargs_type.empty()) os << ", group `" << p.kwargs_type << "`";
  if (!p.description.empty()) os << ": " << p.description;
  os << '\n';
  return os.str();
}

std::string component_line(const ComponentSpec& c) {
  std::ostringstream os;
  os << "- `" << c.name << "`";
  if (!c.type.empty()) os << ": " << c.type;
  os << " (" << creation_name(c.creation) << ")";
  if (!c.from.empty()) os << " from `" << c.from << (c.subfolder.empty() ? "" : "/" + c.subfolder) << "`";
  if (!c.description.empty()) os << " — " << c.description;
  os << '\n';
  return os.str();
}

void interface(std::ostringstream& os, const Block& b, const std::string& heading) {
  auto comps = b.expected_components();
  if (!comps.empty()) {
    os << heading << "Components\n";
    for (const auto& c : comps) os << component_line(c);
  }
  auto configs = b.expected_configs();
  if (!configs.empty()) {
    os << heading << "Configs\n";
    for (const auto& c : configs) os << "- `" << c.name << "` = `" << c.default_value.repr() << "` " << c.description << '\n';
  }
  os << heading << "Inputs\n";
  auto ins = b.inputs();
  if (ins.empty()) os << "(none)\n";
  for (const auto& p : ins) os << input_line(p);
  os << heading << "Outputs\n";
  auto outs = b.outputs();
  if (outs.empty()) os << "(none)\n";
  for (const auto& p : outs) os << output_line(p);
}

void tree(std::ostringstream& os, const Block& b, const std::string& path, int depth) {
  std::string indent(static_cast<size_t>(depth) * 2, ' ');
  if (!path.empty()) {
    os << indent << "- `" << path << "` ";
    switch (b.kind()) {
      case BlockKind::Leaf: os << "[" << b.type_id() << "]"; break;
      case BlockKind::Loop: {
        const auto& lo = static_cast<const LoopSequentialBlocks&>(b).options();
        os << "(loop " << (lo.over.empty() ? "count " + lo.count : "over " + lo.over) << ", binds " << lo.index_name
           << (lo.over.empty() ? "" : ", " + lo.value_name) << ")";
        break;
      }
      case BlockKind::Auto: os << "(auto)"; break;
      case BlockKind::Conditional:
        os << "(conditional by " << static_cast<const ConditionalBlocks&>(b).selector().id << ")";
        break;
      case BlockKind::Sequential: os << "(sequential)"; break;
    }
    if (!b.trigger().empty()) os << " when `" << b.trigger() << "` is given";
    if (!b.description().empty()) os << " — " << b.description();
    os << '\n';
  }
  for (const auto& c : b.children()) tree(os, *c, join_path(path, c->name()), path.empty() ? depth : depth + 1);
}
}  // namespace

std::string block_doc(const BlockTypeInfo& info, const LeafBlock* block) {
  std::ostringstream os;
  os << "# " << info.id << "\n\n" << info.description << "\n\n";
  if (info.source != "builtin") os << "Registered by: " << info.source << "\n\n";
  if (!info.params.empty()) {
    os << "## Params\n";
    for (const auto& p : info.params) os << input_line(p);
  }
  if (block) {
    if (block->description() != info.description && !block->description().empty())
      os << "\n" << block->description() << "\n";
    interface(os, *block, "## ");
  } else {
    os << "\n(inputs and outputs depend on the params above)\n";
  }
  return os.str();
}

std::string recipe_doc(const Pipeline& p) {
  const Recipe& r = p.recipe();
  std::ostringstream os;
  os << "# " << (r.name.empty() ? r.file : r.name) << "\n\n";
  if (!r.description.empty()) os << r.description << "\n\n";
  os << "File: `" << r.file << "`";
  for (const auto& base : r.extends_chain) os << ", extends `" << base << "`";
  os << "\n\n## Inputs\n";
  std::vector<InputParam> all = p.root().inputs();
  for (const auto& in : r.inputs) {
    bool found = false;
    for (auto& q : all)
      if (q.name == in.name) {
        found = true;
        if (in.default_value) q.default_value = in.default_value, q.required = false;
        if (in.required) q.required = true, q.default_value.reset();
        if (!in.description.empty()) q.description = in.description;
        if (in.kind) q.kind = *in.kind;
      }
    if (!found) all.push_back({in.name, in.kind.value_or(Kind::Any), in.description, in.required, in.default_value});
  }
  for (const auto& q : all) os << input_line(q);
  if (!r.workflows.empty()) {
    os << "\n## Workflows\n";
    for (const auto& [name, wf] : r.workflows) {
      os << "### " << name << "\n";
      if (!wf.description.empty()) os << wf.description << "\n";
      os << "Given:";
      for (const auto& i : wf.inputs) os << " `" << i << "`";
      os << "\n\n";
      Plan plan = p.plan(name);
      for (const auto& e : plan.blocks)
        os << "1. `" << e.path << "` [" << e.block_id << "]" << (e.loop.empty() ? "" : " (in loop " + e.loop + ")") << '\n';
      os << "\nComponents:";
      for (const auto& c : plan.components) os << " `" << c << "`";
      os << "\n\n";
    }
  }
  os << "\n## Components\n";
  std::vector<ComponentSpec> comps;
  try {
    comps = p.resolved_components({});
  } catch (const Error&) {  // a ${placeholder} without default, an unreadable model folder: the specs as written
    for (const auto& kv : r.components) comps.push_back(kv.second.spec);
    for (const auto& c : p.root().expected_components())
      if (!r.components.count(c.name)) comps.push_back(c);
  }
  if (comps.empty()) os << "(none)\n";
  for (const auto& c : comps) os << component_line(c);
  os << "\n## Outputs\n";
  for (const auto& o : p.root().outputs()) os << output_line(o);
  os << "\n## Blocks\n";
  tree(os, p.root(), "", 0);
  return os.str();
}

}  // namespace tessera
