// Values, specs, state and the block kinds' aggregation and execution rules (ARCHITECTURE.md §2–3).
#include <catch2/catch.hpp>

#include "tessera/block.h"
#include "tessera/components.h"
#include "tessera/registry.h"
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

BlockPtr leaf(const std::string& id, const std::string& name, ValueMap params = {}, std::string trigger = {}) {
  auto b = reg().create_block(id, params);
  b->set_name(name);
  b->set_trigger(std::move(trigger));
  return b;
}

BlockPtr named(BlockPtr b, const std::string& name) {
  b->set_name(name);
  return b;
}

const InputParam* find(const std::vector<InputParam>& v, const std::string& n) {
  for (const auto& p : v)
    if (p.name == n) return &p;
  return nullptr;
}

bool has_output(const std::vector<OutputParam>& v, const std::string& n) {
  for (const auto& p : v)
    if (p.name == n) return true;
  return false;
}

PipelineState run(const Block& b, PipelineState s = {}) {
  Components comps(reg(), nullptr);
  ExecContext ctx;
  ctx.components = &comps;
  b.execute(ctx, s, "");
  return s;
}
}  // namespace

TEST_CASE("values keep their kind and convert only losslessly", "[engine]") {
  CHECK(Value(int64_t{3}).kind() == Kind::Int);
  CHECK(Value(2.5).kind() == Kind::Float);
  CHECK(Value("a").kind() == Kind::String);
  CHECK(Value(at::zeros({2})).kind() == Kind::Tensor);
  CHECK(Value().is_none());
  CHECK(Value(int64_t{3}).to_float() == 3.0);
  CHECK_THROWS_AS(Value(2.5).to_int("steps"), InputError);
  CHECK_THROWS_WITH(Value("x").tensor("latents"), Contains("'latents' should be tensor but is string"));
  CHECK(Value(int64_t{4}).coerced(Kind::Float, "g").kind() == Kind::Float);
  CHECK(Value("a cat").coerced(Kind::StringList, "prompt").string_list() == std::vector<std::string>{"a cat"});
  CHECK_THROWS_AS(Value(1.5).coerced(Kind::Int, "steps"), InputError);
  CHECK(kind_accepts(Kind::Float, Kind::Int));
  CHECK_FALSE(kind_accepts(Kind::Int, Kind::Float));
}

TEST_CASE("command-line text parses by kind with clear errors", "[engine]") {
  CHECK(parse_value(Kind::Int, "42", "seed").to_int() == 42);
  CHECK(parse_value(Kind::Float, "7.5", "g").to_float() == 7.5);
  CHECK(parse_value(Kind::Bool, "yes", "b").to_bool());
  CHECK(parse_value(Kind::IntList, "1, 2,3", "l").int_list() == std::vector<int64_t>{1, 2, 3});
  CHECK(parse_value(Kind::StringList, "a, b", "p").string_list() == std::vector<std::string>{"a, b"});
  CHECK_THROWS_WITH(parse_value(Kind::Int, "4.5", "steps"), Contains("'steps' expects int but got '4.5'"));
  CHECK_THROWS_WITH(parse_value(Kind::Float, "nan", "g"), Contains("expects float"));
  CHECK_THROWS_AS(parse_value(Kind::Tensor, "x", "latents"), InputError);
}

TEST_CASE("input templates carry diffusers' standard names and defaults", "[engine]") {
  auto steps = InputParam::from_template("num_inference_steps");
  CHECK(steps.kind == Kind::Int);
  CHECK(steps.default_value->to_int() == 50);
  CHECK(InputParam::from_template("prompt").kind == Kind::StringList);
  CHECK_THROWS_WITH(InputParam::from_template("promt"), Contains("did you mean 'prompt'"));
}

TEST_CASE("pipeline state keeps sticky kwargs tags", "[engine]") {
  PipelineState s;
  s.set("prompt_embeds", Value(at::ones({1})), "denoiser_input_fields");
  s.set("prompt_embeds", Value(at::zeros({1})));  // re-set without a tag: the tag stays
  s.set("other", Value(1.0));
  auto group = s.get_by_kwargs("denoiser_input_fields");
  REQUIRE(group.size() == 1);
  CHECK(group.count("prompt_embeds"));
  CHECK(group.at("prompt_embeds").tensor().item<float>() == 0.0f);
}

TEST_CASE("block state: defaults, undeclared reads, declared outputs", "[engine]") {
  SECTION("defaults apply and kinds are coerced") {
    auto s = run(*leaf("test.add", "add"), [] {
      PipelineState p;
      p.set("a", Value(int64_t{2}));
      return p;
    }());
    CHECK(s.get("sum").to_float() == 3.0);
  }
  SECTION("a missing required input is an InputError naming it") {
    CHECK_THROWS_WITH(run(*leaf("test.add", "add")), Contains("required input 'a'"));
  }
  SECTION("reading an undeclared name is a SpecError") {
    CHECK_THROWS_AS(run(*leaf("test.bad_read", "bad")), SpecError);
  }
  SECTION("not setting a declared output is a SpecError") {
    CHECK_THROWS_WITH(run(*leaf("test.no_output", "n")), Contains("did not set its declared output 'y'"));
  }
  SECTION("a failing block is an ExecutionError with its path") {
    try {
      run(*leaf("test.throws", "t"));
      FAIL("expected an error");
    } catch (const ExecutionError& e) {
      CHECK(e.block_path().empty());
      CHECK_THAT(e.message(), Contains("boom"));
    }
  }
  SECTION("only declared outputs are written back") {
    PipelineState p;
    p.set("a", Value(1.0));
    auto s = run(*leaf("test.add", "add"), p);
    CHECK(s.names() == std::vector<std::string>{"a", "sum"});
  }
}

TEST_CASE("sequential: inputs produced upstream disappear; required is the union", "[engine]") {
  SequentialBlocks seq({leaf("test.add", "add"), leaf("test.mul", "mul")}, "add then multiply");
  auto ins = seq.inputs();
  REQUIRE(find(ins, "a"));
  CHECK(find(ins, "a")->required);
  CHECK(find(ins, "b"));
  CHECK(find(ins, "factor"));
  CHECK_FALSE(find(ins, "sum"));  // produced by add
  CHECK(has_output(seq.outputs(), "product"));
  PipelineState p;
  p.set("a", Value(2.0));
  auto s = run(seq, p);
  CHECK(s.get("product").to_float() == 6.0);
}

TEST_CASE("loop: children see i and t each iteration", "[engine]") {
  auto loop = named(std::make_shared<LoopSequentialBlocks>(std::vector<BlockPtr>{leaf("test.tensor_add", "add_i")},
                                                           "adds 0+1+2+3", LoopOptions{"", "n", "i", "t"}),
                    "loop");
  SequentialBlocks seq({leaf("test.tensor_fill", "fill"), loop}, "");
  auto ins = seq.inputs();
  CHECK(find(ins, "n"));
  CHECK(find(ins, "n")->required);
  CHECK_FALSE(find(ins, "i"));  // bound by the loop
  PipelineState p;
  p.set("n", Value(int64_t{4}));
  auto s = run(seq, p);
  CHECK(s.get("x").tensor()[0].item<float>() == 6.0f);

  SECTION("a step callback sees every step and can cancel") {
    Components comps(reg(), nullptr);
    ExecContext ctx;
    ctx.components = &comps;
    std::vector<int64_t> steps;
    ctx.step_callbacks.push_back([&](const StepInfo& info) {
      steps.push_back(info.step);
      CHECK(info.total == 4);
      CHECK(info.loop_path == "loop");
      return info.step < 1;
    });
    PipelineState q;
    q.set("n", Value(int64_t{4}));
    CHECK_THROWS_AS(seq.execute(ctx, q, ""), CancelledError);
    CHECK(steps == std::vector<int64_t>{0, 1});
  }
  SECTION("iterating over a tensor binds t to each element") {
    LoopSequentialBlocks over({leaf("test.tensor_add", "add_i")}, "", LoopOptions{"ts", "", "i", "t"});
    PipelineState q;
    q.set("ts", Value(at::arange(3)));
    q.set("x", Value(at::zeros({1})));
    auto r = run(over, q);
    CHECK(r.get("t").tensor().item<int64_t>() == 2);
    CHECK(r.get("x").tensor()[0].item<float>() == 3.0f);
  }
}

TEST_CASE("auto: first present trigger wins, default otherwise, required is the intersection", "[engine]") {
  auto with_image = leaf("test.need_image", "img", {}, "image");
  auto with_text = leaf("test.need_text", "txt", {}, "text");
  SECTION("without a default the block may be skipped and requires nothing") {
    AutoBlocks a({with_image, with_text}, "");
    for (const auto& p : a.inputs()) CHECK_FALSE(p.required);
    CHECK(a.guaranteed_outputs().empty());
    CHECK(has_output(a.outputs(), "described"));
    auto s = run(a);
    CHECK(s.names().empty());
    PipelineState p;
    p.set("text", Value("hello"));
    CHECK(run(a, p).get("length").to_int() == 5);
  }
  SECTION("with a default, inputs required by every branch stay required") {
    auto d1 = leaf("test.add", "add_default");
    auto b1 = leaf("test.scaled", "scaled", {}, "image");
    AutoBlocks a({b1, d1}, "");
    REQUIRE(find(a.inputs(), "a"));
    CHECK(find(a.inputs(), "a")->required);   // both branches require a
    CHECK_FALSE(find(a.inputs(), "b")->required);
    CHECK(find(a.inputs(), "image"));         // the trigger is an input
    PipelineState p;
    p.set("a", Value(1.0));
    CHECK(run(a, p).has("sum"));
  }
}

TEST_CASE("conditional: a selector picks the branch by name", "[engine]") {
  const Selector* sel = reg().find_selector("test.has_mask_and_image");
  REQUIRE(sel);
  ConditionalBlocks c({leaf("test.add", "text2image"), leaf("test.need_image", "image2image")}, "", *sel, "text2image");
  PipelineState p;
  p.set("a", Value(1.0));
  CHECK(run(c, p).has("sum"));
  PipelineState q;
  q.set("image", Value(ImageBatch{at::zeros({1, 3, 2, 2})}));
  CHECK(run(c, q).has("described"));
  CHECK(find(c.inputs(), "mask_image"));  // read by the selector
}

TEST_CASE("components: from_config eager, from_pretrained lazy and shared by load id", "[engine]") {
  auto manager = std::make_shared<ComponentsManager>();
  Components a(reg(), manager), b(reg(), manager);
  ComponentSpec w;
  w.name = "weights";
  w.type = "TestWeights";
  w.from = "/models/x";
  a.add_spec(w);
  b.add_spec(w);
  ComponentSpec sc;
  sc.name = "scaler";
  sc.type = "TestScale";
  sc.creation = Creation::FromConfig;
  sc.config = Value(ValueMap{{"factor", Value(5.0)}});
  a.add_spec(sc);
  int loads = test::TestWeights::loads;
  int scales = test::TestScale::instances;
  a.create_from_config_components();
  CHECK(test::TestScale::instances == scales + 1);
  CHECK(test::TestWeights::loads == loads);  // not loaded until used
  CHECK_FALSE(a.is_loaded("weights"));
  auto w1 = a.get("weights");
  auto w2 = b.get("weights");
  CHECK(w1 == w2);  // same load id: one load
  CHECK(test::TestWeights::loads == loads + 1);
  CHECK(a.get_as<test::TestScale>("scaler")->factor() == 5.0);
  a.unload("weights");
  CHECK_FALSE(a.is_loaded("weights"));
  a.get("weights");
  CHECK(test::TestWeights::loads == loads + 2);
  CHECK_THROWS_WITH(a.get("weigths"), Contains("did you mean 'weights'"));
}

TEST_CASE("registry: duplicate ids name both sources; did-you-mean on unknown ids", "[engine]") {
  Registry r;
  test::register_test_blocks(r);
  r.set_source("libother.so");
  CHECK_THROWS_WITH(test::register_test_blocks(r), Contains("first by builtin, again by libother.so"));
  CHECK_THROWS_WITH(r.create_block("test.ad", {}), Contains("did you mean 'test.add'"));
  CHECK_THROWS_WITH(r.create_block("test.const", {{"output", Value("x")}}), Contains("needs param 'value'"));
  CHECK_THROWS_WITH(r.create_block("test.const", {{"output", Value("x")}, {"valeu", Value(1.0)}}),
                    Contains("did you mean 'value'"));
  CHECK_THROWS_WITH(r.create_block("test.const", {{"output", Value("x")}, {"value", Value("high")}}),
                    Contains("should be float but is string"));
}

TEST_CASE("did-you-mean suggests close and truncated names, nothing for far ones", "[engine]") {
  std::vector<std::string> ids{"common.prepare_noise", "common.set_steps", "common.to_image"};
  CHECK(did_you_mean("common.set_step", ids) == "did you mean 'common.set_steps'?");
  CHECK(did_you_mean("common.prepare", ids) == "did you mean 'common.prepare_noise'?");
  CHECK(did_you_mean("common.", ids) == "did you mean 'common.prepare_noise', 'common.set_steps' or 'common.to_image'?");
  CHECK(did_you_mean("vae_decode", ids).empty());
}
