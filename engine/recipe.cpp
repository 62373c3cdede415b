#include "tessera/recipe.h"

#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

namespace tessera {

namespace fs = std::filesystem;

const RecipeInput* Recipe::find_input(const std::string& name) const {
  for (const auto& in : inputs)
    if (in.name == name) return &in;
  return nullptr;
}

namespace {

/// Validates UTF-8 (YAML text must be Unicode); returns the byte offset of the first bad sequence or npos.
size_t find_invalid_utf8(const std::string& s) {
  size_t i = 0, n = s.size();
  while (i < n) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == 0) return i;
    size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (len == 0 || i + len > n) return i;
    for (size_t k = 1; k < len; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return i;
    if (len == 2 && c < 0xC2) return i;  // overlong
    i += len;
  }
  return std::string::npos;
}

size_t line_of_offset(const std::string& s, size_t off) {
  size_t line = 1;
  for (size_t i = 0; i < off && i < s.size(); ++i)
    if (s[i] == '\n') ++line;
  return line;
}

/// Walks YAML with a budget: bounded nodes and depth, locations on every error.
class Reader {
 public:
  Reader(std::string file, const RecipeLimits& limits) : file_(std::move(file)), limits_(limits) {}

  SourceLoc loc(const YAML::Node& n) const {
    YAML::Mark m = n.Mark();
    if (m.is_null()) return {file_, 0, 0};
    return {file_, m.line + 1, m.column + 1};
  }

  [[noreturn]] void fail(const YAML::Node& n, const std::string& msg, const std::string& hint = {}) const {
    throw RecipeError(msg, loc(n), {}, hint);
  }

  void visit(const YAML::Node& n, int depth) {
    if (++visited_ > limits_.max_nodes)
      fail(n, "recipe is too large: more than " + std::to_string(limits_.max_nodes) +
                  " YAML nodes (counting each use of an alias)",
           "recipes are small; check for runaway anchors/aliases");
    if (depth > limits_.max_depth)
      fail(n, "recipe nests deeper than " + std::to_string(limits_.max_depth) + " levels");
  }

  /// Counts every node of a subtree against the budget (so aliases cannot multiply work later).
  void budget_tree(const YAML::Node& n, int depth) {
    visit(n, depth);
    if (n.IsSequence())
      for (const auto& c : n) budget_tree(c, depth + 1);
    else if (n.IsMap())
      for (const auto& kv : n) {
        budget_tree(kv.first, depth + 1);
        budget_tree(kv.second, depth + 1);
      }
  }

  std::string scalar(const YAML::Node& n, const std::string& what) const {
    if (!n.IsScalar()) fail(n, "'" + what + "' should be a single value (text), found a " + type_name(n));
    return n.Scalar();
  }

  std::string key(const YAML::Node& k, const std::string& where) const {
    if (!k.IsScalar()) fail(k, "keys of '" + where + "' must be plain names, found a " + type_name(k));
    return k.Scalar();
  }

  void check_map(const YAML::Node& n, const std::string& what) const {
    if (!n.IsMap()) fail(n, "'" + what + "' should be a map (key: value), found a " + type_name(n));
  }

  void check_keys(const YAML::Node& n, const std::set<std::string>& allowed, const std::string& what) const {
    check_map(n, what);
    std::set<std::string> seen;
    for (const auto& kv : n) {
      std::string k = key(kv.first, what);
      if (!seen.insert(k).second) fail(kv.first, "key '" + k + "' appears twice in " + what);
      if (!allowed.count(k)) {
        std::vector<std::string> cands(allowed.begin(), allowed.end());
        std::string hint = did_you_mean(k, cands);
        if (hint.empty()) {
          hint = "allowed keys: ";
          bool first = true;
          for (const auto& a : allowed) hint += (first ? "" : ", ") + a, first = false;
        }
        fail(kv.first, "unknown key '" + k + "' in " + what, hint);
      }
    }
  }

  Value value(const YAML::Node& n, Kind kind, const std::string& what) const {
    try {
      return value_from_yaml(n, kind, what);
    } catch (const InputError& e) {
      fail(n, e.message());
    }
  }

  static std::string type_name(const YAML::Node& n) {
    if (n.IsMap()) return "map";
    if (n.IsSequence()) return "list";
    if (n.IsNull()) return "null";
    return "value '" + n.Scalar() + "'";
  }

  const std::string& file() const { return file_; }

 private:
  std::string file_;
  const RecipeLimits& limits_;
  size_t visited_ = 0;
};

bool valid_name(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-')) return false;
  return true;
}

void check_name(Reader& r, const YAML::Node& n, const std::string& name, const std::string& what) {
  if (!valid_name(name))
    r.fail(n, what + " '" + name + "' is not a valid name", "use letters, digits, '_' and '-' (no dots: dots join paths)");
}

RecipeNode parse_node(Reader& r, const YAML::Node& n, const std::string& parent_path,
                      const std::string& default_name = {});

std::vector<RecipeNode> parse_children(Reader& r, const YAML::Node& list, const std::string& path,
                                       const std::string& what) {
  if (!list.IsSequence()) r.fail(list, "'" + what + "' should be a list of blocks, found a " + Reader::type_name(list));
  std::vector<RecipeNode> out;
  std::set<std::string> names;
  for (const auto& item : list) {
    RecipeNode child = parse_node(r, item, path);
    if (!names.insert(child.name).second)
      r.fail(item, "two blocks named '" + child.name + "' in '" + (path.empty() ? "blocks" : path) + "'",
             "names of sibling blocks must differ: they form the dotted paths");
    out.push_back(std::move(child));
  }
  return out;
}

RecipeNode parse_node(Reader& r, const YAML::Node& n, const std::string& parent_path,
                      const std::string& default_name) {
  static const std::set<std::string> kKeys = {"name",   "description", "block",       "params", "sequential", "loop",
                                              "blocks", "auto",        "conditional", "trigger"};
  r.check_keys(n, kKeys, "a block entry");
  RecipeNode node;
  node.loc = r.loc(n);
  if (n["name"]) {
    node.name = r.scalar(n["name"], "name");
    check_name(r, n["name"], node.name, "block name");
  } else if (!default_name.empty()) {
    node.name = default_name;
  } else {
    r.fail(n, "block entry has no 'name'", "every block needs a name: it forms its dotted path");
  }
  std::string path = join_path(parent_path, node.name);
  if (n["description"]) node.description = r.scalar(n["description"], "description");
  if (n["trigger"]) node.trigger = r.scalar(n["trigger"], "trigger");

  int forms = !!n["block"] + !!n["sequential"] + !!n["loop"] + !!n["auto"] + !!n["conditional"];
  if (forms != 1)
    r.fail(n, "block '" + path + "' must have exactly one of 'block', 'sequential', 'loop', 'auto', 'conditional' (found " +
                  std::to_string(forms) + ")");
  auto forbid = [&](const char* k, const char* form) {
    if (n[k]) r.fail(n[k], std::string("'") + k + "' does not apply to a " + form + " block ('" + path + "')");
  };
  if (n["block"]) {
    node.kind = BlockKind::Leaf;
    node.block_id = r.scalar(n["block"], "block");
    forbid("blocks", "leaf");
    if (n["params"]) {
      r.check_map(n["params"], "params");
      for (const auto& kv : n["params"]) {
        std::string k = r.key(kv.first, "params");
        node.params[k] = r.value(kv.second, Kind::Any, "params." + k);
      }
    }
    return node;
  }
  forbid("params", "composite");
  if (n["sequential"]) {
    node.kind = BlockKind::Sequential;
    forbid("blocks", "sequential");
    node.children = parse_children(r, n["sequential"], path, "sequential");
  } else if (n["auto"]) {
    node.kind = BlockKind::Auto;
    forbid("blocks", "auto");
    node.children = parse_children(r, n["auto"], path, "auto");
    bool seen_default = false;
    for (const auto& c : node.children) {
      if (seen_default)
        r.fail(n["auto"], "in auto block '" + path + "', branch '" + c.name + "' comes after the default branch and can never run",
               "put the branch without a trigger last");
      if (c.trigger.empty()) seen_default = true;
    }
  } else if (n["loop"]) {
    node.kind = BlockKind::Loop;
    const YAML::Node& l = n["loop"];
    r.check_keys(l, {"over", "count", "index", "value"}, "loop of '" + path + "'");
    if (!!l["over"] == !!l["count"])
      r.fail(l, "loop of '" + path + "' needs exactly one of 'over' (an input to iterate) or 'count' (an int input)");
    if (l["over"]) node.loop.over = r.scalar(l["over"], "over");
    if (l["count"]) node.loop.count = r.scalar(l["count"], "count");
    if (l["index"]) node.loop.index_name = r.scalar(l["index"], "index");
    if (l["value"]) node.loop.value_name = r.scalar(l["value"], "value");
    if (!n["blocks"]) r.fail(n, "loop '" + path + "' has no 'blocks' (its body)");
    node.children = parse_children(r, n["blocks"], path, "blocks");
  } else {
    node.kind = BlockKind::Conditional;
    const YAML::Node& c = n["conditional"];
    r.check_keys(c, {"selector", "select_by", "default"}, "conditional of '" + path + "'");
    if (!!c["selector"] == !!c["select_by"])
      r.fail(c, "conditional '" + path + "' needs exactly one of 'selector' (a registered selector id) or 'select_by' (a string input naming the branch)");
    if (c["selector"]) node.selector = r.scalar(c["selector"], "selector");
    if (c["select_by"]) node.select_by = r.scalar(c["select_by"], "select_by");
    if (c["default"]) node.default_child = r.scalar(c["default"], "default");
    if (!n["blocks"]) r.fail(n, "conditional '" + path + "' has no 'blocks' (its branches)");
    node.children = parse_children(r, n["blocks"], path, "blocks");
    if (!node.default_child.empty()) {
      bool found = false;
      for (const auto& ch : node.children) found = found || ch.name == node.default_child;
      if (!found) {
        std::vector<std::string> names;
        for (const auto& ch : node.children) names.push_back(ch.name);
        r.fail(c["default"], "default branch '" + node.default_child + "' is not a branch of '" + path + "'",
               did_you_mean(node.default_child, names));
      }
    }
  }
  for (const auto& ch : node.children)
    if (!ch.trigger.empty() && node.kind != BlockKind::Auto)
      throw RecipeError("'trigger' only applies to branches of an auto block ('" + join_path(path, ch.name) + "')", ch.loc);
  return node;
}

RecipeNode* find_node_mut(RecipeNode& root, const std::string& dotted) {
  RecipeNode* cur = &root;
  std::stringstream ss(dotted);
  std::string part;
  while (std::getline(ss, part, '.')) {
    RecipeNode* next = nullptr;
    for (auto& c : cur->children)
      if (c.name == part) next = &c;
    if (!next) return nullptr;
    cur = next;
  }
  return cur;
}

std::pair<RecipeNode*, size_t> find_parent(RecipeNode& root, const std::string& dotted) {
  auto dot = dotted.rfind('.');
  RecipeNode* parent = dot == std::string::npos ? &root : find_node_mut(root, dotted.substr(0, dot));
  if (!parent) return {nullptr, 0};
  std::string last = dot == std::string::npos ? dotted : dotted.substr(dot + 1);
  for (size_t i = 0; i < parent->children.size(); ++i)
    if (parent->children[i].name == last) return {parent, i};
  return {nullptr, 0};
}

void check_unique_child(Reader& r, const YAML::Node& at, const RecipeNode& parent, const std::string& name,
                        const std::string& parent_path) {
  for (const auto& c : parent.children)
    if (c.name == name) r.fail(at, "'" + parent_path + "' already has a block named '" + name + "'");
}

[[noreturn]] void unknown_path(Reader& r, const YAML::Node& at, const RecipeNode& root, const std::string& path,
                               const std::string& what) {
  r.fail(at, what + ": no block at path '" + path + "'", did_you_mean(path, node_paths(root)));
}

void apply_edits(Reader& r, const YAML::Node& doc, Recipe& recipe) {
  if (const YAML::Node& rm = doc["remove"]) {
    if (!rm.IsSequence()) r.fail(rm, "'remove' should be a list of dotted block paths");
    for (const auto& item : rm) {
      std::string path = r.scalar(item, "remove");
      auto [parent, idx] = find_parent(recipe.root, path);
      if (!parent) unknown_path(r, item, recipe.root, path, "remove");
      parent->children.erase(parent->children.begin() + static_cast<long>(idx));
    }
  }
  if (const YAML::Node& rp = doc["replace"]) {
    r.check_map(rp, "replace");
    for (const auto& kv : rp) {
      std::string path = r.key(kv.first, "replace");
      auto [parent, idx] = find_parent(recipe.root, path);
      if (!parent) unknown_path(r, kv.first, recipe.root, path, "replace");
      auto dot = path.rfind('.');
      std::string parent_path = dot == std::string::npos ? "" : path.substr(0, dot);
      const YAML::Node& node = kv.second;
      // The replacement keeps the replaced block's name unless it gives one.
      RecipeNode replacement = parse_node(r, node, parent_path, parent->children[idx].name);
      if (replacement.name != parent->children[idx].name) check_unique_child(r, node, *parent, replacement.name, parent_path);
      if (replacement.trigger.empty()) replacement.trigger = parent->children[idx].trigger;
      parent->children[idx] = std::move(replacement);
    }
  }
  if (const YAML::Node& ins = doc["insert"]) {
    if (!ins.IsSequence()) r.fail(ins, "'insert' should be a list of {before|after|into: path, block: {...}}");
    for (const auto& item : ins) {
      r.check_keys(item, {"before", "after", "into", "block"}, "an insert entry");
      int where = !!item["before"] + !!item["after"] + !!item["into"];
      if (where != 1) r.fail(item, "an insert entry needs exactly one of 'before', 'after', 'into'");
      if (!item["block"]) r.fail(item, "an insert entry needs 'block' (the block entry to insert)");
      RecipeNode* parent = nullptr;
      size_t pos = 0;
      std::string parent_path;
      if (item["into"]) {
        parent_path = r.scalar(item["into"], "into");
        parent = parent_path.empty() ? &recipe.root : find_node_mut(recipe.root, parent_path);
        if (!parent) unknown_path(r, item["into"], recipe.root, parent_path, "insert into");
        if (parent->kind == BlockKind::Leaf) r.fail(item["into"], "insert into '" + parent_path + "': it is a leaf block, not a composite");
        pos = parent->children.size();
      } else {
        const YAML::Node& at = item["before"] ? item["before"] : item["after"];
        std::string path = r.scalar(at, "before/after");
        auto [p, idx] = find_parent(recipe.root, path);
        if (!p) unknown_path(r, at, recipe.root, path, "insert");
        parent = p;
        pos = item["before"] ? idx : idx + 1;
        auto dot = path.rfind('.');
        parent_path = dot == std::string::npos ? "" : path.substr(0, dot);
      }
      RecipeNode node = parse_node(r, item["block"], parent_path);
      check_unique_child(r, item["block"], *parent, node.name, parent_path.empty() ? "blocks" : parent_path);
      parent->children.insert(parent->children.begin() + static_cast<long>(pos), std::move(node));
    }
  }
}

struct LoadContext {
  const RecipeLimits& limits;
  std::vector<std::string> stack;  // canonical paths being loaded (cycle detection)
};

Recipe parse_document(const std::string& text, const std::string& file, LoadContext& ctx);

Recipe load_file(const std::string& path, LoadContext& ctx, const SourceLoc& from) {
  std::error_code ec;
  if (!fs::exists(path, ec))
    throw RecipeError("recipe file '" + path + "' does not exist", from, {}, "check the path (relative paths in 'extends' resolve against the including recipe's folder)");
  if (!fs::is_regular_file(path, ec)) throw RecipeError("recipe '" + path + "' is not a regular file", from);
  auto size = fs::file_size(path, ec);
  if (ec) throw RecipeError("cannot read recipe '" + path + "': " + ec.message(), from);
  if (size > ctx.limits.max_file_bytes)
    throw RecipeError("recipe '" + path + "' is " + std::to_string(size) + " bytes; the limit is " +
                      std::to_string(ctx.limits.max_file_bytes), from);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw RecipeError("cannot open recipe '" + path + "'", from);
  std::string text(static_cast<size_t>(size), '\0');
  in.read(text.data(), static_cast<std::streamsize>(size));
  text.resize(static_cast<size_t>(in.gcount()));
  return parse_document(text, path, ctx);
}

Recipe parse_document(const std::string& text_in, const std::string& file, LoadContext& ctx) {
  if (text_in.size() > ctx.limits.max_file_bytes)
    throw RecipeError("recipe is " + std::to_string(text_in.size()) + " bytes; the limit is " +
                      std::to_string(ctx.limits.max_file_bytes), {file});
  std::string text = text_in;
  if (text.size() >= 3 && text.compare(0, 3, "\xEF\xBB\xBF") == 0) text = text.substr(3);  // UTF-8 BOM
  size_t bad = find_invalid_utf8(text);
  if (bad != std::string::npos)
    throw RecipeError("recipe is not valid UTF-8 text (bad byte at offset " + std::to_string(bad) + ")",
                      {file, static_cast<int>(line_of_offset(text, bad)), 0}, {}, "save the recipe as UTF-8 YAML");

  YAML::Node doc;
  try {
    doc = YAML::Load(text);
  } catch (const YAML::DeepRecursion& e) {
    SourceLoc loc{file, e.mark.is_null() ? 0 : e.mark.line + 1, e.mark.is_null() ? 0 : e.mark.column + 1};
    throw RecipeError("recipe nests collections too deeply for the YAML parser (depth " + std::to_string(e.depth()) + ")",
                      loc, {}, "recipes need only a few levels of nesting");
  } catch (const YAML::Exception& e) {
    SourceLoc loc{file, e.mark.is_null() ? 0 : e.mark.line + 1, e.mark.is_null() ? 0 : e.mark.column + 1};
    throw RecipeError("malformed YAML: " + e.msg, loc, {}, "fix the YAML syntax at this line and column");
  }
  Reader r(file, ctx.limits);
  if (!doc || doc.IsNull()) throw RecipeError("recipe is empty", {file}, {}, "a recipe starts with 'version: 1'");
  r.budget_tree(doc, 0);
  r.check_keys(doc,
               {"version", "name", "description", "extends", "plugins", "components", "inputs", "configs", "blocks",
                "workflows", "remove", "replace", "insert"},
               "the recipe");

  if (!doc["version"]) r.fail(doc, "recipe has no 'version'", "add 'version: " + std::to_string(kRecipeVersion) + "' at the top");
  {
    std::string v = r.scalar(doc["version"], "version");
    if (v != std::to_string(kRecipeVersion))
      r.fail(doc["version"], "recipe version '" + v + "' is not supported; this Tessera reads version " +
                                 std::to_string(kRecipeVersion));
  }
  std::string dir = fs::path(file).parent_path().string();
  auto resolve = [&](const std::string& p) {
    if (p.empty() || fs::path(p).is_absolute()) return p;
    return (fs::path(dir.empty() ? "." : dir) / p).lexically_normal().string();
  };

  Recipe recipe;
  bool has_base = false;
  if (doc["extends"]) {
    std::string base = resolve(r.scalar(doc["extends"], "extends"));
    std::error_code ec;
    std::string canon = fs::weakly_canonical(base, ec).string();
    if (ec) canon = base;
    for (const auto& s : ctx.stack)
      if (s == canon) {
        std::string chain;
        for (const auto& x : ctx.stack) chain += x + " -> ";
        r.fail(doc["extends"], "cyclic 'extends': " + chain + canon, "a recipe cannot extend itself, directly or through others");
      }
    if (static_cast<int>(ctx.stack.size()) >= ctx.limits.max_extends)
      r.fail(doc["extends"], "'extends' chain is longer than " + std::to_string(ctx.limits.max_extends));
    ctx.stack.push_back(canon);
    recipe = load_file(base, ctx, r.loc(doc["extends"]));
    ctx.stack.pop_back();
    recipe.extends_chain.insert(recipe.extends_chain.begin(), base);
    has_base = true;
  }
  recipe.file = file;
  recipe.version = kRecipeVersion;
  if (doc["name"]) recipe.name = r.scalar(doc["name"], "name");
  if (doc["description"]) recipe.description = r.scalar(doc["description"], "description");

  if (const YAML::Node& pl = doc["plugins"]) {
    if (!pl.IsSequence()) r.fail(pl, "'plugins' should be a list of shared-library paths");
    for (const auto& item : pl) recipe.plugins.push_back({resolve(r.scalar(item, "plugins")), r.loc(item)});
  }

  if (const YAML::Node& comps = doc["components"]) {
    r.check_map(comps, "components");
    for (const auto& kv : comps) {
      std::string name = r.key(kv.first, "components");
      check_name(r, kv.first, name, "component name");
      const YAML::Node& c = kv.second;
      r.check_keys(c, {"type", "from", "subfolder", "variant", "dtype", "config", "creation", "description", "model_type",
                       "config_from", "loras"},
                   "component '" + name + "'");
      RecipeComponent rc;
      rc.loc = r.loc(kv.first);
      rc.origin_dir = dir;
      rc.spec.name = name;
      if (!c["type"]) r.fail(c, "component '" + name + "' has no 'type'", "give its diffusers class name, e.g. type: DDIMScheduler");
      rc.spec.type = r.scalar(c["type"], "type");
      if (c["from"]) rc.spec.from = r.scalar(c["from"], "from");
      if (c["subfolder"]) rc.spec.subfolder = r.scalar(c["subfolder"], "subfolder");
      if (c["variant"]) rc.spec.variant = r.scalar(c["variant"], "variant");
      if (c["dtype"]) {
        const std::string d = r.scalar(c["dtype"], "dtype");
        std::string problem;
        rc.spec.dtype = canonical_dtype(d, &problem);
        if (rc.spec.dtype.empty())
          r.fail(c["dtype"], "component '" + name + "': " + problem, "write dtype: bf16, fp32 or auto (or leave it out for float32)");
      }
      if (c["description"]) rc.spec.description = r.scalar(c["description"], "description");
      if (c["model_type"]) rc.spec.model_type = r.scalar(c["model_type"], "model_type");
      if (c["config_from"]) rc.spec.config_from = r.scalar(c["config_from"], "config_from");
      if (const YAML::Node& loras = c["loras"]) {
        if (!loras.IsSequence())
          r.fail(loras, "component '" + name + "': loras must be a list of {file, weight}",
                 "write loras: [{file: style.safetensors, weight: 0.8}]");
        for (const auto& l : loras) {
          if (!l.IsMap()) r.fail(l, "component '" + name + "': each LoRA must be a map {file, weight}");
          r.check_keys(l, {"file", "weight"}, "a LoRA of component '" + name + "'");
          if (!l["file"]) r.fail(l, "component '" + name + "': a LoRA has no 'file'");
          LoraSpec ls;
          ls.file = r.scalar(l["file"], "file");
          if (l["weight"]) ls.weight = r.scalar(l["weight"], "weight");
          rc.spec.loras.push_back(std::move(ls));
        }
      }
      if (c["config"]) rc.spec.config = r.value(c["config"], Kind::Map, "config");
      rc.spec.creation = rc.spec.from.empty() ? Creation::FromConfig : Creation::FromPretrained;
      if (c["creation"]) {
        std::string cr = r.scalar(c["creation"], "creation");
        if (cr == "from_pretrained") rc.spec.creation = Creation::FromPretrained;
        else if (cr == "from_config") rc.spec.creation = Creation::FromConfig;
        else r.fail(c["creation"], "creation '" + cr + "' is not one of from_pretrained, from_config");
      }
      if (rc.spec.creation == Creation::FromPretrained && rc.spec.from.empty())
        r.fail(c, "component '" + name + "' is from_pretrained but has no 'from' (model folder)");
      recipe.components[name] = std::move(rc);
    }
  }

  if (const YAML::Node& ins = doc["inputs"]) {
    r.check_map(ins, "inputs");
    for (const auto& kv : ins) {
      std::string name = r.key(kv.first, "inputs");
      check_name(r, kv.first, name, "input name");
      RecipeInput in;
      in.name = name;
      in.loc = r.loc(kv.first);
      in.origin_dir = dir;
      const YAML::Node& v = kv.second;
      bool spec_form = v.IsMap() && v.size() > 0;
      if (spec_form)
        for (const auto& f : v) {
          std::string k = f.first.IsScalar() ? f.first.Scalar() : "";
          if (k != "default" && k != "required" && k != "kind" && k != "description") spec_form = false;
        }
      if (spec_form) {
        if (v["kind"]) {
          std::string k = r.scalar(v["kind"], "kind");
          in.kind = kind_from_name(k);
          if (!in.kind || *in.kind == Kind::Any || *in.kind == Kind::None)
            r.fail(v["kind"], "unknown kind '" + k + "' for input '" + name + "'", did_you_mean(k, kind_names()));
        }
        if (v["required"]) in.required = r.value(v["required"], Kind::Bool, "required").to_bool();
        if (v["description"]) in.description = r.scalar(v["description"], "description");
        if (v["default"] && !v["default"].IsNull())
          in.default_value = r.value(v["default"], in.kind.value_or(Kind::Any), "inputs." + name + ".default");
        if (in.required && in.default_value)
          r.fail(v, "input '" + name + "' is both required and has a default", "drop one of them");
      } else if (!v.IsNull()) {
        in.default_value = r.value(v, Kind::Any, "inputs." + name);
      }
      bool replaced = false;
      for (auto& existing : recipe.inputs)
        if (existing.name == name) existing = in, replaced = true;
      if (!replaced) recipe.inputs.push_back(std::move(in));
    }
  }

  if (const YAML::Node& cfg = doc["configs"]) {
    r.check_map(cfg, "configs");
    for (const auto& kv : cfg) {
      std::string name = r.key(kv.first, "configs");
      recipe.configs[name] = {r.value(kv.second, Kind::Any, "configs." + name), r.loc(kv.first)};
    }
  }

  if (const YAML::Node& wf = doc["workflows"]) {
    r.check_map(wf, "workflows");
    for (const auto& kv : wf) {
      std::string name = r.key(kv.first, "workflows");
      check_name(r, kv.first, name, "workflow name");
      RecipeWorkflow w;
      w.name = name;
      w.loc = r.loc(kv.first);
      YAML::Node list = kv.second;
      if (list.IsMap()) {
        r.check_keys(list, {"inputs", "description"}, "workflow '" + name + "'");
        if (list["description"]) w.description = r.scalar(list["description"], "description");
        list = list["inputs"];
        if (!list) r.fail(kv.second, "workflow '" + name + "' has no 'inputs'");
      }
      if (!list.IsSequence()) r.fail(list, "workflow '" + name + "' should list the inputs it is given, e.g. [prompt, image]");
      for (const auto& item : list) w.inputs.push_back(r.scalar(item, "workflow input"));
      recipe.workflows[name] = std::move(w);
    }
  }

  if (doc["blocks"]) {
    recipe.root = RecipeNode{};
    recipe.root.kind = BlockKind::Sequential;
    recipe.root.loc = r.loc(doc["blocks"]);
    recipe.root.children = parse_children(r, doc["blocks"], "", "blocks");
  } else if (!has_base) {
    r.fail(doc, "recipe has no 'blocks'", "list the blocks to run under 'blocks:'");
  }
  if ((doc["remove"] || doc["replace"] || doc["insert"]) && !has_base)
    r.fail(doc["remove"] ? doc["remove"] : doc["replace"] ? doc["replace"] : doc["insert"],
           "'remove', 'replace' and 'insert' edit a base recipe, but this recipe has no 'extends'");
  apply_edits(r, doc, recipe);
  return recipe;
}

}  // namespace

Recipe load_recipe(const std::string& path, const RecipeLimits& limits) {
  LoadContext ctx{limits, {}};
  std::error_code ec;
  std::string canon = fs::weakly_canonical(path, ec).string();
  ctx.stack.push_back(ec ? path : canon);
  return load_file(path, ctx, {});
}

Recipe parse_recipe(const std::string& text, const std::string& file_name, const RecipeLimits& limits) {
  LoadContext ctx{limits, {}};
  std::error_code ec;
  std::string canon = fs::weakly_canonical(file_name, ec).string();
  ctx.stack.push_back(ec ? file_name : canon);
  return parse_document(text, file_name, ctx);
}

const RecipeNode* find_node(const RecipeNode& root, const std::string& dotted) {
  return find_node_mut(const_cast<RecipeNode&>(root), dotted);
}

std::vector<std::string> node_paths(const RecipeNode& root) {
  std::vector<std::string> out;
  std::function<void(const RecipeNode&, const std::string&)> rec = [&](const RecipeNode& n, const std::string& p) {
    for (const auto& c : n.children) {
      std::string cp = join_path(p, c.name);
      out.push_back(cp);
      rec(c, cp);
    }
  };
  rec(root, "");
  return out;
}

}  // namespace tessera
