// Recipe parsing: format, locations, extends/edits, and bounded handling of untrusted files.
#include <catch2/catch.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "tessera/recipe.h"

using namespace tessera;
using Catch::Matchers::Contains;

namespace fs = std::filesystem;

namespace {
struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("tessera-recipe-" + std::to_string(std::rand()) + "-" +
                                        std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string write(const std::string& name, const std::string& text) const {
    std::ofstream(path / name, std::ios::binary) << text;
    return (path / name).string();
  }
};

const char* kBase = R"(version: 1
name: base
inputs:
  a: 2
  steps: {default: 3, kind: int, description: how many}
  prompt: {required: true}
components:
  scaler: {type: TestScale, config: {factor: 4}}
workflows:
  plain: [a]
blocks:
  - name: first
    block: test.add
    params: {}
  - name: then
    sequential:
      - name: mul
        block: test.mul
      - name: text
        block: test.to_string
)";

RecipeError recipe_error(const std::string& text, const std::string& file = "r.yaml") {
  try {
    parse_recipe(text, file);
  } catch (const RecipeError& e) {
    return e;
  }
  FAIL("expected a RecipeError for:\n" << text);
  throw;
}
}  // namespace

TEST_CASE("a recipe parses into a tree with file:line on every node", "[engine][recipe]") {
  Recipe r = parse_recipe(kBase, "base.yaml");
  CHECK(r.name == "base");
  REQUIRE(r.root.children.size() == 2);
  CHECK(r.root.children[0].block_id == "test.add");
  CHECK(r.root.children[0].loc.line == 12);
  CHECK(r.root.children[1].kind == BlockKind::Sequential);
  const RecipeNode* text = find_node(r.root, "then.text");
  REQUIRE(text);
  CHECK(text->loc.str() == "base.yaml:19:9");
  REQUIRE(r.find_input("steps"));
  CHECK(r.find_input("steps")->kind == Kind::Int);
  CHECK(r.find_input("steps")->default_value->to_int() == 3);
  CHECK(r.find_input("prompt")->required);
  CHECK(r.find_input("a")->default_value->to_int() == 2);
  CHECK(r.components.at("scaler").spec.creation == Creation::FromConfig);
  CHECK(r.components.at("scaler").spec.config.map().at("factor").to_int() == 4);
  CHECK(r.workflows.at("plain").inputs == std::vector<std::string>{"a"});
  CHECK(node_paths(r.root) == std::vector<std::string>{"first", "then", "then.mul", "then.text"});
}

TEST_CASE("all five block forms parse", "[engine][recipe]") {
  Recipe r = parse_recipe(R"(version: 1
blocks:
  - name: loop
    loop: {count: n, index: k}
    blocks:
      - {name: body, block: test.tensor_add}
  - name: pick
    auto:
      - {name: img, block: test.need_image, trigger: image}
      - {name: txt, block: test.need_text}
  - name: cond
    conditional: {select_by: mode, default: a}
    blocks:
      - {name: a, block: test.add}
      - {name: b, block: test.mul}
)",
                          "forms.yaml");
  const RecipeNode* loop = find_node(r.root, "loop");
  REQUIRE(loop);
  CHECK(loop->kind == BlockKind::Loop);
  CHECK(loop->loop.count == "n");
  CHECK(loop->loop.index_name == "k");
  CHECK(find_node(r.root, "pick.img")->trigger == "image");
  CHECK(find_node(r.root, "cond")->default_child == "a");
  CHECK(find_node(r.root, "cond")->select_by == "mode");
}

TEST_CASE("recipe errors name the place and the fix", "[engine][recipe]") {
  SECTION("malformed YAML reports line and column") {
    auto e = recipe_error("version: 1\nblocks:\n  - name: [unclosed\n");
    CHECK(e.where().line >= 3);
    CHECK(e.where().column > 0);
    CHECK_THAT(e.message(), Contains("malformed YAML"));
  }
  SECTION("wrong or missing version") {
    CHECK_THAT(recipe_error("version: 2\nblocks: []\n").what(), Contains("version '2' is not supported"));
    CHECK_THAT(recipe_error("blocks: []\n").what(), Contains("add 'version: 1'"));
  }
  SECTION("unknown keys with did-you-mean, at their line") {
    auto e = recipe_error("version: 1\nblocks: []\nworkflow: {}\n");
    CHECK(e.where().str() == "r.yaml:3:1");
    CHECK_THAT(e.what(), Contains("unknown key 'workflow'") && Contains("did you mean 'workflows'"));
    CHECK_THAT(recipe_error("version: 1\nblocks:\n  - {name: a, blok: x}\n").what(), Contains("did you mean 'block'"));
  }
  SECTION("structural mistakes") {
    CHECK_THAT(recipe_error("version: 1\nblocks:\n  - {block: test.add}\n").what(), Contains("has no 'name'"));
    CHECK_THAT(recipe_error("version: 1\nblocks:\n  - {name: a, block: x, sequential: []}\n").what(),
               Contains("exactly one of"));
    CHECK_THAT(recipe_error("version: 1\nblocks:\n  - {name: a, block: x}\n  - {name: a, block: y}\n").what(),
               Contains("two blocks named 'a'"));
    CHECK_THAT(recipe_error("version: 1\nblocks:\n  - {name: a.b, block: x}\n").what(), Contains("not a valid name"));
    CHECK_THAT(recipe_error("version: 1\nblocks:\n  - name: l\n    loop: {}\n    blocks: []\n").what(),
               Contains("exactly one of 'over'"));
    CHECK_THAT(recipe_error("version: 1\nblocks:\n  - name: p\n    auto:\n      - {name: d, block: x}\n      - {name: t, "
                            "block: y, trigger: image}\n")
                   .what(),
               Contains("after the default branch"));
    CHECK_THAT(recipe_error("version: 1\ninputs: {x: {required: true, default: 1}}\nblocks: []\n").what(),
               Contains("both required and has a default"));
    CHECK_THAT(recipe_error("version: 1\ninputs: {x: {kind: tensr}}\nblocks: []\n").what(),
               Contains("did you mean 'tensor'"));
    CHECK_THAT(recipe_error("version: 1\nremove: [a]\nblocks: []\n").what(), Contains("has no 'extends'"));
  }
  SECTION("not UTF-8, empty, or NUL bytes") {
    CHECK_THAT(recipe_error(std::string("version: 1\nname: \xff\xfe\n")).what(), Contains("not valid UTF-8"));
    CHECK_THAT(recipe_error(std::string("version: 1\n\0\n", 13)).what(), Contains("not valid UTF-8"));
    CHECK_THAT(recipe_error("").what(), Contains("recipe is empty"));
    CHECK_THAT(recipe_error("# only a comment\n").what(), Contains("recipe is empty"));
  }
}

TEST_CASE("extends merges and edits by dotted path", "[engine][recipe]") {
  TempDir dir;
  dir.write("base.yaml", kBase);
  std::string child = dir.write("child.yaml", R"(version: 1
extends: base.yaml
name: child
inputs:
  a: 5
remove: [then.text]
replace:
  first: {block: test.tensor_fill}
insert:
  - after: first
    block: {name: extra, block: test.add}
  - into: then
    block: {name: last, block: test.to_string}
  - before: then.mul
    block: {name: pre, block: test.const, params: {output: factor, value: 3}}
)");
  Recipe r = load_recipe(child);
  CHECK(r.name == "child");
  CHECK(r.find_input("a")->default_value->to_int() == 5);  // overridden
  CHECK(r.find_input("steps"));                             // inherited
  CHECK(r.components.count("scaler"));
  CHECK(node_paths(r.root) ==
        std::vector<std::string>{"first", "extra", "then", "then.pre", "then.mul", "then.last"});
  CHECK(find_node(r.root, "first")->block_id == "test.tensor_fill");
  CHECK(find_node(r.root, "then.pre")->params.at("value").to_int() == 3);
  CHECK(find_node(r.root, "then.last")->loc.file == child);  // nodes remember their own file
  CHECK(find_node(r.root, "then.mul")->loc.file == (dir.path / "base.yaml").string());

  SECTION("edits of missing paths suggest the right one") {
    std::string bad = dir.write("bad.yaml", "version: 1\nextends: base.yaml\nremove: [then.mull]\n");
    CHECK_THROWS_WITH(load_recipe(bad), Contains("bad.yaml:3") && Contains("did you mean 'then.mul'"));
  }
  SECTION("cyclic extends is an error naming the chain") {
    dir.write("x.yaml", "version: 1\nextends: y.yaml\n");
    std::string y = dir.write("y.yaml", "version: 1\nextends: x.yaml\n");
    CHECK_THROWS_WITH(load_recipe(y), Contains("cyclic 'extends'"));
  }
  SECTION("self-extension and a missing base") {
    std::string s = dir.write("self.yaml", "version: 1\nextends: self.yaml\n");
    CHECK_THROWS_WITH(load_recipe(s), Contains("cyclic"));
    std::string m = dir.write("m.yaml", "version: 1\nextends: nowhere.yaml\n");
    CHECK_THROWS_WITH(load_recipe(m), Contains("does not exist") && Contains("m.yaml:2"));
  }
}

TEST_CASE("untrusted recipes end in bounded time with a RecipeError", "[engine][recipe]") {
  SECTION("billion laughs: aliases count against the node budget") {
    std::string text = "version: 1\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n";
    for (int i = 1; i < 12; ++i) {
      text += "a" + std::to_string(i) + ": &a" + std::to_string(i) + " [";
      for (int k = 0; k < 10; ++k) text += std::string(k ? ", " : "") + "*a" + std::to_string(i - 1);
      text += "]\n";
    }
    text += "blocks: []\n";
    // The node budget stops the walk: 10^11 alias uses are never expanded.
    CHECK_THAT(recipe_error(text).what(), Contains("too large"));
  }
  SECTION("deep nesting") {
    std::string deep = "version: 1\nblocks: " + std::string(5000, '[') + std::string(5000, ']') + "\n";
    CHECK_THROWS_AS(parse_recipe(deep, "deep.yaml"), RecipeError);
    std::string deeper = "version: 1\nx: " + std::string(200000, '[') + "\n";
    CHECK_THROWS_AS(parse_recipe(deeper, "deeper.yaml"), RecipeError);
  }
  SECTION("oversized files are refused before parsing") {
    TempDir dir;
    std::string big = dir.write("big.yaml", "version: 1\n# " + std::string(2 << 20, 'x') + "\nblocks: []\n");
    CHECK_THROWS_WITH(load_recipe(big), Contains("the limit is"));
  }
  SECTION("random bytes never crash") {
    std::srand(7);
    for (int n = 0; n < 300; ++n) {
      std::string junk(static_cast<size_t>(std::rand() % 200), ' ');
      for (auto& c : junk) c = "version: 1\nblocks-[]{}&*!|>'\"%@`#,?:\t "[std::rand() % 40];
      try {
        parse_recipe(junk, "junk.yaml");
      } catch (const RecipeError&) {
      }
    }
    SUCCEED("300 random documents parsed or rejected with RecipeError");
  }
}

TEST_CASE("a component's dtype: canonical names, part of the load id; unknown or fp16 is a RecipeError at its line",
          "[engine][recipe]") {
  const std::string head = "version: 1\ncomponents:\n";
  const std::string tail = "blocks: []\n";
  Recipe r = parse_recipe(head + "  a: {type: UNet2DConditionModel, from: m, dtype: bfloat16}\n" +
                              "  b: {type: UNet2DConditionModel, from: m, dtype: float32}\n" +
                              "  c: {type: UNet2DConditionModel, from: m}\n" + tail,
                          "r.yaml");
  const ComponentSpec& a = r.components.at("a").spec;
  const ComponentSpec& b = r.components.at("b").spec;
  const ComponentSpec& c = r.components.at("c").spec;
  CHECK(a.dtype == "bf16");
  CHECK(b.dtype == "fp32");
  CHECK(c.dtype.empty());
  CHECK(a.load_id() != b.load_id());  // a bf16 and a float32 copy of one folder never alias
  CHECK(b.load_id() == c.load_id());  // float32 is the default

  auto e = recipe_error(head + "  a: {type: UNet2DConditionModel, from: m, dtype: int8}\n" + tail);
  CHECK(e.where().str() == "r.yaml:3:51");
  CHECK_THAT(e.what(), Contains("component 'a'") && Contains("unknown dtype 'int8'") && Contains("dtype: bf16"));
  CHECK_THAT(recipe_error(head + "  a: {type: UNet2DConditionModel, from: m, dtype: fp16}\n" + tail).what(),
             Contains("use bf16"));
  CHECK(canonical_dtype("") == "fp32");
  CHECK(canonical_dtype("bf16") == "bf16");
  std::string why;
  CHECK(canonical_dtype("float16", &why).empty());
  CHECK_THAT(why, Contains("half-precision"));
}
