// Pipelines from recipes: static validation (before any weight loads), plans per workflow, runs.
#include <catch2/catch.hpp>

#include <filesystem>

#include <unistd.h>

#include "tessera/pipeline.h"
#include "tests/support/test_blocks.h"

using namespace tessera;
using Catch::Matchers::Contains;

namespace {
Registry& reg() {
  static Registry r = [] {
    Registry x;
    test::register_test_blocks(x);
    return x;
  }();
  return r;
}

std::unique_ptr<Pipeline> build(const std::string& text) { return Pipeline::from_recipe(parse_recipe(text, "p.yaml"), reg()); }

std::string problems_text(const Pipeline& p) {
  std::string all;
  for (const auto& e : p.problems()) all += std::string(e.what()) + "\n";
  return all;
}

const char* kAuto = R"(version: 1
inputs:
  a: 1.5
workflows:
  text2image: [text]
  image2image: [image]
blocks:
  - name: add
    block: test.add
  - name: branch
    auto:
      - {name: from_image, block: test.need_image, trigger: image}
      - {name: from_text, block: test.need_text, trigger: text}
  - name: scale
    block: test.scaled
)";
}  // namespace

TEST_CASE("a consistent recipe validates, plans per workflow and runs", "[engine][pipeline]") {
  auto p = build(kAuto);
  CHECK(problems_text(*p).empty());
  Plan img = p->plan("image2image");
  REQUIRE(img.blocks.size() == 3);
  CHECK(img.blocks[1].path == "branch.from_image");
  CHECK(img.blocks[1].block_id == "test.need_image");
  CHECK(img.components == std::vector<std::string>{"scaler"});
  Plan txt = p->plan("text2image");
  CHECK(txt.blocks[1].path == "branch.from_text");
  Plan none = p->plan_for_inputs({});
  CHECK(none.blocks.size() == 2);
  CHECK(none.skipped == std::vector<std::string>{"branch"});
  CHECK_THAT(format_plan(img), Contains("branch.from_image  [test.need_image]"));
  CHECK_THROWS_WITH(p->plan("img2img"), Contains("unknown workflow 'img2img'"));
  CHECK_THROWS_WITH(p->plan("text2imag"), Contains("did you mean 'text2image'"));

  auto state = p->run({{"text", Value("four")}});
  CHECK(state.get("length").to_int() == 4);
  CHECK(state.get("sum").to_float() == 2.5);
  CHECK(state.get("scaled").to_float() == 1.5 * 3);  // TestScale's default factor
  CHECK_FALSE(state.has("described"));
}

TEST_CASE("--set values parse by the kind the blocks declare", "[engine][pipeline]") {
  auto p = build(kAuto);
  CHECK(p->input_kind("a") == Kind::Float);
  CHECK(p->parse_input("a", "2").to_float() == 2.0);
  CHECK(p->input_kind("image") == Kind::Image);
  CHECK_THROWS_WITH(p->parse_input("a", "two"), Contains("'a' expects float but got 'two'"));
  CHECK_THROWS_WITH(p->input_kind("txet"), Contains("did you mean 'text'"));
  CHECK_THROWS_WITH(p->run({{"tetx", Value("x")}}), Contains("no input named 'tetx'"));
}

TEST_CASE("missing required inputs are reported before anything runs", "[engine][pipeline]") {
  auto p = build("version: 1\ninputs: {prompt: {required: true, kind: string}}\nblocks:\n  - {name: n, block: test.need_text}\n  - {name: add, block: test.add}\n");
  // text and a are unsatisfied statically: no workflow provides them.
  CHECK_THAT(problems_text(*p), Contains("requires input 'text'") && Contains("requires input 'a'"));
  try {
    p->run({});
    FAIL("expected InputError");
  } catch (const InputError& e) {
    CHECK_THAT(e.what(), Contains("missing required inputs prompt, text, a") && Contains("--set prompt=…"));
  }
}

TEST_CASE("static validation finds every class of problem with file:line and block path", "[engine][pipeline]") {
  SECTION("unknown block ids with did-you-mean, all reported at once") {
    try {
      build("version: 1\nblocks:\n  - {name: a, block: test.ad}\n  - {name: b, block: test.mull}\n");
      FAIL("expected ValidationErrors");
    } catch (const ValidationErrors& e) {
      REQUIRE(e.errors().size() == 2);
      CHECK(e.errors()[0].where().str() == "p.yaml:3:5");
      CHECK(e.errors()[0].block_path() == "a");
      CHECK_THAT(e.errors()[0].what(), Contains("did you mean 'test.add'"));
      CHECK_THAT(e.errors()[1].what(), Contains("did you mean 'test.mul'"));
    }
  }
  SECTION("unknown selector and component type") {
    CHECK_THROWS_WITH(build("version: 1\nblocks:\n  - name: c\n    conditional: {selector: test.has_mask_and_imag}\n    blocks: [{name: a, block: test.add}]\n"),
                      Contains("did you mean 'test.has_mask_and_image'"));
    auto p = build("version: 1\ncomponents:\n  scaler: {type: TestScal}\ninputs: {a: 1}\nblocks:\n  - {name: s, block: test.scaled}\n");
    CHECK_THAT(problems_text(*p), Contains("p.yaml:3:3") && Contains("unknown type 'TestScal'") &&
                                      Contains("did you mean 'TestScale'"));
  }
  SECTION("kind mismatch between producer and consumer") {
    auto p = build("version: 1\ninputs: {a: 1}\nblocks:\n  - {name: c, block: test.const, params: {output: text, value: 2}}\n  - {name: n, block: test.need_text}\n");
    CHECK_THAT(problems_text(*p), Contains("reads 'text' as string, but block c provides float") && Contains("p.yaml:5"));
  }
  SECTION("duplicate producers with different kinds") {
    auto p = build("version: 1\ninputs: {product: 2.0}\nblocks:\n  - {name: s, block: test.to_string}\n  - {name: c, block: test.const, params: {output: text, value: 1}}\n");
    CHECK_THAT(problems_text(*p), Contains("two producers of 'text' with different kinds"));
  }
  SECTION("recipe input default of the wrong kind") {
    auto p = build("version: 1\ninputs: {a: hello}\nblocks:\n  - {name: add, block: test.add}\n");
    CHECK_THAT(problems_text(*p), Contains("default of input 'a' is string") && Contains("p.yaml:2"));
  }
  SECTION("declared inputs that nothing reads") {
    auto p = build("version: 1\ninputs: {a: 1, factr: 2}\nblocks:\n  - {name: add, block: test.add}\n  - {name: m, block: test.mul}\n");
    CHECK_THAT(problems_text(*p), Contains("input 'factr' is declared, but no block reads it") &&
                                      Contains("did you mean 'factor'"));
  }
  SECTION("conflicting defaults, unless the recipe decides") {
    const char* two = "version: 1\ninputs: {a: 1}\nblocks:\n  - {name: x, block: test.add}\n  - {name: y, block: test.tensor_fill}\n";
    // test.add: b=1.0 and test.tensor_fill: value=0.0 are different names: no conflict
    CHECK(problems_text(*build(two)).empty());
  }
  SECTION("a trigger nothing can supply") {
    auto p = build("version: 1\ninputs: {a: 1}\nblocks:\n  - name: br\n    auto:\n      - {name: i, block: test.add, trigger: imagee}\n");
    CHECK_THAT(problems_text(*p), Contains("trigger 'imagee'") && Contains("can never run"));
  }
  SECTION("workflows: unknown input names and per-workflow unsatisfied requirements") {
    auto p = build(R"(version: 1
inputs: {a: 1}
workflows:
  good: [text]
  typo: [txt]
  missing: []
blocks:
  - name: br
    auto:
      - {name: t, block: test.need_text, trigger: text}
      - {name: d, block: test.need_image}
)");
    std::string all = problems_text(*p);
    CHECK_THAT(all, Contains("workflow 'typo' names input 'txt'"));
    CHECK_THAT(all, Contains("workflow 'missing': block test.need_image requires input 'image'"));
    CHECK_THAT(all, Contains("workflow 'typo': block test.need_image requires input 'image'"));
    CHECK_THAT(all, !Contains("workflow 'good'"));
  }
  SECTION("a component declared with a type the block does not expect") {
    auto p = build("version: 1\ncomponents:\n  scaler: {type: TestWeights, from: /x}\ninputs: {a: 1}\nblocks:\n  - {name: s, block: test.scaled}\n");
    // Another type of the same category would be accepted (the block's type is a default); another category is not.
    CHECK_THAT(problems_text(*p), Contains("declared as TestWeights (model) but block s expects TestScale (other)"));
  }
  SECTION("a from_pretrained component the recipe does not declare") {
    auto p = build("version: 1\ninputs: {a: 1}\nblocks:\n  - {name: w, block: test.weighted}\n");
    CHECK_THAT(problems_text(*p), Contains("needs component 'weights'") && Contains("add it under 'components:'"));
  }
  SECTION("placeholders must name recipe inputs") {
    auto p = build("version: 1\ncomponents:\n  weights: {type: TestWeights, from: '${modle}'}\ninputs: {a: 1}\nblocks:\n  - {name: w, block: test.weighted}\n");
    CHECK_THAT(problems_text(*p), Contains("uses '${modle}', which is not a recipe input"));
  }
}

const char* const kLazyRecipe = R"(version: 1
inputs:
  model: ./models/x
  a: 1
  use_weights: {kind: bool, description: run the branch that needs weights}
components:
  weights: {type: TestWeights, from: '${model}', subfolder: w}
  scaler: {type: TestScale, config: {factor: 10}}
blocks:
  - {name: s, block: test.scaled}
  - name: maybe
    auto:
      - {name: w, block: test.weighted, trigger: use_weights}
)";

TEST_CASE("components load lazily from resolved paths", "[engine][pipeline]") {
  auto p = build(kLazyRecipe);
  INFO(problems_text(*p));
  CHECK(problems_text(*p).empty());
  auto specs = p->resolved_components({{"model", Value("/abs/model")}});
  bool found = false;
  for (const auto& s : specs)
    if (s.name == "weights") {
      found = true;
      CHECK(s.from == "/abs/model");
    }
  CHECK(found);
  int loads = test::TestWeights::loads;
  auto st = p->run({});  // the weights' folder need not exist: the branch that needs them does not run
  CHECK(st.get("scaled").to_float() == 10.0);
  CHECK(test::TestWeights::loads == loads);  // the branch that needs it did not run
  CHECK_FALSE(p->components().is_loaded("weights"));
  // A pretrained component the plan needs must have its folder before anything runs. (Only a fresh temporary
  // folder is created and removed here: the test may run from any working directory.)
  CHECK_THROWS_WITH(p->run({{"use_weights", Value(true)}}),
                    Contains("component 'weights' (TestWeights): 'models/x/w' does not exist"));
  CHECK(test::TestWeights::loads == loads);
  const auto dir = std::filesystem::temp_directory_path() / ("tessera_lazy_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir / "w");
  auto q = build(kLazyRecipe);
  q->run({{"use_weights", Value(true)}, {"model", Value(dir.string())}});
  CHECK(test::TestWeights::loads == loads + 1);
  std::filesystem::remove_all(dir);
  CHECK(p->components().spec("weights").from == "models/x");  // recipe-relative, recipe in the working dir
}

TEST_CASE("configs: block defaults, recipe overrides, validated names and kinds", "[engine][pipeline]") {
  auto plain = build("version: 1\ninputs: {a: 1}\nblocks:\n  - {name: c, block: test.configured}\n");
  CHECK(plain->run({}).get("shifted").to_float() == 1.5);
  auto set = build("version: 1\ninputs: {a: 1}\nconfigs: {offset: 2}\nblocks:\n  - {name: c, block: test.configured}\n");
  CHECK(problems_text(*set).empty());
  CHECK(set->run({}).get("shifted").to_float() == 3.0);
  auto typo = build("version: 1\ninputs: {a: 1}\nconfigs: {ofset: 2}\nblocks:\n  - {name: c, block: test.configured}\n");
  CHECK_THAT(problems_text(*typo), Contains("p.yaml:3:11") && Contains("config 'ofset' is set, but no block declares it") &&
                                       Contains("did you mean 'offset'"));
  auto kind = build("version: 1\ninputs: {a: 1}\nconfigs: {offset: big}\nblocks:\n  - {name: c, block: test.configured}\n");
  CHECK_THAT(problems_text(*kind), Contains("config 'offset' should be float but is string"));
}
