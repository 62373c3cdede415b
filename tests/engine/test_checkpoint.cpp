// Tests for engine/checkpoint: request parsing, state (de)serialisation of every value kind, save/stop/load
// at block boundaries on small C++ pipelines, path validation and malformed checkpoint files.
#include <catch2/catch.hpp>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "tessera/block.h"
#include "engine/checkpoint.h"
#include "tessera/components.h"
#include "tessera/error.h"
#include "tessera/registry.h"
#include "engine/safetensors.h"

namespace fs = std::filesystem;
using namespace tessera;

namespace {

struct CkptDir {
  fs::path dir;
  CkptDir() {
    std::string tmpl = (fs::temp_directory_path() / "tessera-ckpt-XXXXXX").string();
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    dir = tmpl;
  }
  ~CkptDir() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::string file(const std::string& name) const { return (dir / name).string(); }
};

// ---- tiny blocks

/// x = randn(2, 3) from a generator seeded with `seed`; also outputs the generator.
class InitBlock : public LeafBlock {
 public:
  BlockSpec spec() const override {
    return BlockSpec("test.init", "random x")
        .input({"seed", Kind::Int, "", true})
        .output({"x", Kind::Tensor})
        .output({"gen", Kind::Generator});
  }
  void run(Components&, BlockState& s) const override {
    at::Generator g = at::detail::createCPUGenerator(static_cast<uint64_t>(s.get_int("seed")));
    s.set("x", at::randn({2, 3}, g));
    s.set("gen", Value(g));
  }
};

/// Produces one value of every kind (some tagged), so a checkpoint after it must carry them all.
class MiscBlock : public LeafBlock {
 public:
  BlockSpec spec() const override {
    return BlockSpec("test.misc", "values of every kind")
        .input({"x", Kind::Tensor, "", true})
        .output({"f", Kind::Float})
        .output({"flags", Kind::Bool})
        .output({"label", Kind::String})
        .output({"ilist", Kind::IntList})
        .output({"flist", Kind::FloatList})
        .output({"slist", Kind::StringList})
        .output({"tlist", Kind::TensorList})
        .output({"img", Kind::Image})
        .output({"emb", Kind::Tensor, "", "denoiser_input_fields"})
        .output({"cfg", Kind::Map});
  }
  void run(Components&, BlockState& s) const override {
    const at::Tensor& x = s.tensor("x");
    s.set("f", Value(std::nan("")));
    s.set("flags", Value(true));
    s.set("label", Value(std::string("a cät")));
    s.set("ilist", Value(std::vector<int64_t>{1, -2, INT64_MAX}));
    s.set("flist", Value(std::vector<double>{0.1, -0.0, INFINITY, -INFINITY}));
    s.set("slist", Value(std::vector<std::string>{"a", ""}));
    s.set("tlist", Value(std::vector<at::Tensor>{x * 2, at::arange(3, at::kLong)}));
    s.set("img", Value(ImageBatch{at::sigmoid(x).reshape({1, 3, 2, 1})}));
    s.set("emb", Value(x.to(at::kHalf)));
    s.set("cfg", Value(ValueMap{{"scale", Value(7.5)}, {"t", Value(x.sum())}, {"inner", Value(ValueMap{{"k", 3}})}}));
  }
};

/// x = x + 0.5 * i
class AddStepBlock : public LeafBlock {
 public:
  BlockSpec spec() const override {
    return BlockSpec("test.add_step", "x += i / 2").input({"x", Kind::Tensor, "", true}).input({"i", Kind::Int, "", true}).output({"x", Kind::Tensor});
  }
  void run(Components&, BlockState& s) const override { s.set("x", s.tensor("x") + 0.5 * static_cast<double>(s.get_int("i"))); }
};

/// x = x * 1.5
class ScaleBlock : public LeafBlock {
 public:
  BlockSpec spec() const override {
    return BlockSpec("test.scale", "x *= 1.5").input({"x", Kind::Tensor, "", true}).output({"x", Kind::Tensor});
  }
  void run(Components&, BlockState& s) const override { s.set("x", s.tensor("x") * 1.5); }
};

/// x = x + randn(gen): the generator advances, so a resume must restore its exact state.
class NoiseBlock : public LeafBlock {
 public:
  BlockSpec spec() const override {
    return BlockSpec("test.noise", "x += noise")
        .input({"x", Kind::Tensor, "", true})
        .input({"gen", Kind::Generator, "", true})
        .output({"x", Kind::Tensor});
  }
  void run(Components&, BlockState& s) const override {
    s.set("x", s.tensor("x") + at::randn({2, 3}, s.get("gen").generator()));
  }
};

/// y = x + tlist[0] + emb
class FinishBlock : public LeafBlock {
 public:
  BlockSpec spec() const override {
    return BlockSpec("test.finish", "y")
        .input({"x", Kind::Tensor, "", true})
        .input({"tlist", Kind::TensorList, "", true})
        .input({"emb", Kind::Tensor, "", true})
        .output({"y", Kind::Tensor});
  }
  void run(Components&, BlockState& s) const override {
    s.set("y", s.tensor("x") + s.get("tlist").tensor_list()[0] + s.tensor("emb").to(at::kFloat));
  }
};

template <typename T>
BlockPtr named(std::string name, std::shared_ptr<T> b) {
  b->set_name(std::move(name));
  return b;
}

/// init → misc → denoise (loop over `steps`: add_step, scale, noise) → finish
std::shared_ptr<SequentialBlocks> make_pipeline() {
  auto loop = std::make_shared<LoopSequentialBlocks>(
      std::vector<BlockPtr>{named("add_step", std::make_shared<AddStepBlock>()),
                            named("scale", std::make_shared<ScaleBlock>()),
                            named("noise", std::make_shared<NoiseBlock>())},
      "denoising loop", LoopOptions{"", "steps", "i", "t"});
  loop->set_name("denoise");
  return std::make_shared<SequentialBlocks>(
      std::vector<BlockPtr>{named("init", std::make_shared<InitBlock>()), named("misc", std::make_shared<MiscBlock>()),
                            loop, named("finish", std::make_shared<FinishBlock>())},
      "test pipeline");
}

PipelineState inputs() {
  PipelineState s;
  s.set("seed", Value(int64_t(42)));
  s.set("steps", Value(int64_t(3)));
  return s;
}

/// Runs `root` on `state` with `obs` attached (if any).
void run(const Block& root, PipelineState& state, CheckpointObserver* obs = nullptr) {
  Registry registry;
  Components comps(registry, nullptr);
  ExecContext ctx;
  ctx.components = &comps;
  if (obs) obs->attach(ctx);
  root.execute(ctx, state, "");
  REQUIRE(ctx.resume_after.empty());
}

bool same_bytes(const at::Tensor& a, const at::Tensor& b) {
  if (a.defined() != b.defined()) return false;
  if (!a.defined()) return true;
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  at::Tensor ca = a.cpu().contiguous(), cb = b.cpu().contiguous();
  return std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.nbytes()) == 0;  // bitwise: nan == nan, -0 != 0
}

bool same_value(const Value& a, const Value& b) {
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Kind::None: return true;
    case Kind::Tensor: return same_bytes(a.tensor(), b.tensor());
    case Kind::Image: return same_bytes(a.images().pixels, b.images().pixels);
    case Kind::Int: return a.to_int() == b.to_int();
    case Kind::Float: {
      double x = a.to_float(), y = b.to_float();
      return std::memcmp(&x, &y, sizeof x) == 0;
    }
    case Kind::Bool: return a.to_bool() == b.to_bool();
    case Kind::String: return a.str() == b.str();
    case Kind::IntList: return a.int_list() == b.int_list();
    case Kind::StringList: return a.string_list() == b.string_list();
    case Kind::FloatList:
      return a.float_list().size() == b.float_list().size() &&
             std::memcmp(a.float_list().data(), b.float_list().data(), a.float_list().size() * sizeof(double)) == 0;
    case Kind::TensorList: {
      if (a.tensor_list().size() != b.tensor_list().size()) return false;
      for (size_t i = 0; i < a.tensor_list().size(); ++i)
        if (!same_bytes(a.tensor_list()[i], b.tensor_list()[i])) return false;
      return true;
    }
    case Kind::Generator: return same_bytes(a.generator().get_state(), b.generator().get_state());
    case Kind::Map: {
      if (a.map().size() != b.map().size()) return false;
      for (const auto& [k, v] : a.map())
        if (!b.map().count(k) || !same_value(v, b.map().at(k))) return false;
      return true;
    }
    default: return false;
  }
}

void require_same_state(const PipelineState& a, const PipelineState& b) {
  REQUIRE(a.names() == b.names());
  for (const auto& name : a.names()) {
    INFO("value " << name << ": " << a.get(name).repr() << " vs " << b.get(name).repr());
    CHECK(same_value(a.get(name), b.get(name)));
    CHECK(a.tags(name) == b.tags(name));
  }
}

}  // namespace

TEST_CASE("checkpoint requests parse NAME:action[=FILE]", "[engine][checkpoint]") {
  auto r = parse_checkpoint_request("denoise.loop:save");
  CHECK(r.block_path == "denoise.loop");
  CHECK(r.action == CheckpointAction::Save);
  CHECK(r.file == "denoise.loop.safetensors");
  r = parse_checkpoint_request("encode:load=/tmp/a:b.safetensors");
  CHECK(r.action == CheckpointAction::Load);
  CHECK(r.file == "/tmp/a:b.safetensors");
  CHECK(parse_checkpoint_request("x:stop").action == CheckpointAction::Stop);
  for (const char* bad : {"", "encode", ":save", "encode:", "encode:sav", "encode:save=", "en code:save"}) {
    INFO(bad);
    CHECK_THROWS_AS(parse_checkpoint_request(bad), UsageError);
    CHECK_THROWS_WITH(parse_checkpoint_request(bad), Catch::Contains("NAME:save|stop|load[=FILE]"));
  }
  CHECK_THROWS_WITH(parse_checkpoint_request("encode:sav"), Catch::Contains("save"));
  CHECK(checkpoint_step_file("out/x.safetensors", 3) == "out/x.step3.safetensors");
  CHECK(checkpoint_step_file("x", 0) == "x.step0");
  CHECK(checkpoint_step_file("a.b/x", 1) == "a.b/x.step1");
}

TEST_CASE("save_state/load_state round-trip every value kind", "[engine][checkpoint]") {
  CkptDir tmp;
  PipelineState s;
  at::Generator g = at::detail::createCPUGenerator(7);
  (void)at::randn({5}, g);  // advance past the seed state
  s.set("t", Value(at::randn({2, 2}).to(at::kBFloat16)));
  s.set("undef", Value(at::Tensor()));
  s.set("img", Value(ImageBatch{at::rand({1, 3, 4, 4})}));
  s.set("tl", Value(std::vector<at::Tensor>{at::ones({1}), at::zeros({2, 0}), at::tensor({1, 0}, at::kLong).to(at::kBool)}));
  s.set("empty_tl", Value(std::vector<at::Tensor>{}));
  s.set("gen", Value(g));
  s.set("gen_alias", Value(g));
  s.set("n", Value(int64_t(-5)));
  s.set("big", Value(INT64_MIN));
  s.set("f", Value(-0.0));
  s.set("pi", Value(3.141592653589793));
  s.set("inf", Value(-INFINITY));
  s.set("b", Value(false));
  s.set("str", Value(std::string("héllo \"quoted\"\n")));
  s.set("il", Value(std::vector<int64_t>{}));
  s.set("fl", Value(std::vector<double>{1e-300, std::nan("")}));
  s.set("sl", Value(std::vector<std::string>{"x", "y"}));
  s.set("none", Value());
  s.set("m", Value(ValueMap{{"a", Value(1)}, {"t", Value(at::ones({3}))}, {"sub", Value(ValueMap{{"g", Value(g)}})}}),
        "denoiser_input_fields");
  s.set("m", s.get("m"), "extra_tag");
  const std::string path = tmp.file("state.safetensors");
  save_state(path, s, {{"seed", "7"}});

  PipelineState back = load_state(path);
  require_same_state(s, back);
  CHECK(checkpoint_metadata(path) == std::map<std::string, std::string>{{"seed", "7"}});
  // Generators that were one object stay one object: drawing from one advances the other.
  at::Generator g1 = back.get("gen").generator(), g2 = back.get("gen_alias").generator();
  CHECK(g1.unsafeGetGeneratorImpl() == g2.unsafeGetGeneratorImpl());
  CHECK(back.get("m").map().at("sub").map().at("g").generator().unsafeGetGeneratorImpl() ==
        g1.unsafeGetGeneratorImpl());
  // The loaded generator continues exactly where the saved one was.
  CHECK(same_bytes(at::randn({4}, g1), at::randn({4}, g)));
  // Tensors are stored as tensors, readable by any safetensors reader.
  SafetensorsFile f(path);
  CHECK(f.has("t"));
  CHECK(f.has("tl.0"));
  CHECK(f.has("m.t"));
  CHECK(f.has("gen"));
  CHECK_FALSE(f.has("gen_alias"));
}

TEST_CASE("save_state refuses what it cannot store", "[engine][checkpoint]") {
  CkptDir tmp;
  const std::string path = tmp.file("x.safetensors");
  PipelineState s;
  s.set("c", Value(at::zeros({2}, at::kComplexFloat)));
  CHECK_THROWS_AS(save_state(path, s), CheckpointError);
  PipelineState clash;
  clash.set("a", Value(std::vector<at::Tensor>{at::ones({1})}));
  clash.set("a.0", Value(at::ones({1})));
  CHECK_THROWS_WITH(save_state(path, clash), Catch::Contains("a.0"));
  CHECK_THROWS_AS(save_state(path, PipelineState(), {{"tessera.state", "x"}}), CheckpointError);
  CHECK_FALSE(fs::exists(path));
}

TEST_CASE("save then load-and-resume is bit-identical to a straight run", "[engine][checkpoint]") {
  CkptDir tmp;
  auto root = make_pipeline();
  PipelineState straight = inputs();
  run(*root, straight);
  REQUIRE(straight.has("y"));

  // One run that saves after `misc` and after the whole loop must itself match the straight run.
  std::vector<CheckpointRequest> saves{{"misc", CheckpointAction::Save, tmp.file("misc.safetensors")},
                                       {"denoise", CheckpointAction::Save, tmp.file("denoise.safetensors")}};
  check_checkpoint_paths(*root, saves);
  CheckpointObserver saver(saves);
  PipelineState saved_run = inputs();
  run(*root, saved_run, &saver);
  require_same_state(straight, saved_run);
  CHECK(saver.files_written() == std::vector<std::string>{saves[0].file, saves[1].file});
  CHECK(checkpoint_metadata(saves[0].file).at("tessera.block") == "misc");

  for (const auto& at : {std::string("misc"), std::string("denoise"), std::string("init")}) {
    INFO("resume after " << at);
    if (at == "init") {  // a checkpoint from another run of the same pipeline
      CheckpointObserver s2({{"init", CheckpointAction::Save, tmp.file("init.safetensors")}});
      PipelineState st = inputs();
      run(*root, st, &s2);
    }
    std::vector<CheckpointRequest> load{{at, CheckpointAction::Load, tmp.file(at + ".safetensors")}};
    check_checkpoint_paths(*root, load);
    CheckpointObserver loader(load);
    CHECK(loader.resume_after() == at);
    PipelineState resumed;  // nothing given: the checkpoint carries inputs too
    run(*root, resumed, &loader);
    require_same_state(straight, resumed);
    // The observer re-injects a fresh copy each time, so a second resumed run is identical too.
    PipelineState again = inputs();
    run(*root, again, &loader);
    require_same_state(straight, again);
    CHECK(loader.files_written().empty());
  }
}

TEST_CASE("a save inside a loop body writes one file per iteration", "[engine][checkpoint]") {
  CkptDir tmp;
  auto root = make_pipeline();
  std::vector<CheckpointRequest> reqs{parse_checkpoint_request("denoise.scale:save=" + tmp.file("scale.safetensors"))};
  check_checkpoint_paths(*root, reqs);
  CheckpointObserver obs(reqs);
  PipelineState st = inputs();
  run(*root, st, &obs);
  REQUIRE(obs.files_written().size() == 3);
  for (int i = 0; i < 3; ++i) {
    const std::string f = tmp.file("scale.step" + std::to_string(i) + ".safetensors");
    CHECK(obs.files_written()[i] == f);
    PipelineState s = load_state(f);
    CHECK(s.get("i").to_int() == i);
    CHECK(checkpoint_metadata(f).at("tessera.step") == std::to_string(i));
  }
  CHECK_FALSE(fs::exists(tmp.file("scale.safetensors")));
}

TEST_CASE("stop writes the state and ends the run after the block", "[engine][checkpoint]") {
  CkptDir tmp;
  auto root = make_pipeline();
  const std::string file = tmp.file("stopped.safetensors");
  CheckpointObserver obs({{"misc", CheckpointAction::Stop, file}});
  PipelineState st = inputs();
  try {
    run(*root, st, &obs);
    FAIL("expected StopRun");
  } catch (const StopRun& stop) {
    CHECK(stop.block_path == "misc");
    CHECK(stop.file == file);
  }
  CHECK(st.has("label"));    // misc ran
  CHECK_FALSE(st.has("i"));  // the loop did not
  CHECK_FALSE(st.has("y"));
  require_same_state(st, load_state(file));

  // Resuming from the stop file finishes the run exactly like a straight one.
  PipelineState straight = inputs();
  run(*root, straight);
  CheckpointObserver loader({{"misc", CheckpointAction::Load, file}});
  PipelineState resumed;
  run(*root, resumed, &loader);
  require_same_state(straight, resumed);
}

TEST_CASE("checkpoint paths are validated against the block tree", "[engine][checkpoint]") {
  auto root = make_pipeline();
  auto check = [&](std::vector<CheckpointRequest> r) { check_checkpoint_paths(*root, r); };
  CHECK_NOTHROW(check({{"denoise.noise", CheckpointAction::Save, "a"}, {"finish", CheckpointAction::Stop, "b"}}));
  CHECK_NOTHROW(check({{"denoise", CheckpointAction::Load, "a"}, {"finish", CheckpointAction::Save, "b"}}));

  CHECK_THROWS_AS(check({{"denoise.scal", CheckpointAction::Save, "a"}}), CheckpointError);
  CHECK_THROWS_WITH(check({{"denoise.scal", CheckpointAction::Save, "a"}}), Catch::Contains("denoise.scale"));
  CHECK_THROWS_WITH(check({{"denoise.scale", CheckpointAction::Load, "a"}}),
                    Catch::Contains("loop block 'denoise'") && Catch::Contains("load at 'denoise'"));
  CHECK_THROWS_WITH(check({{"misc", CheckpointAction::Load, "a"}, {"init", CheckpointAction::Load, "b"}}),
                    Catch::Contains("only one"));
  CHECK_THROWS_WITH(check({{"denoise", CheckpointAction::Load, "a"}, {"misc", CheckpointAction::Save, "b"}}),
                    Catch::Contains("never fire"));
  CHECK_THROWS_WITH(check({{"denoise", CheckpointAction::Load, "a"}, {"denoise", CheckpointAction::Save, "b"}}),
                    Catch::Contains("never fire"));
  CHECK_THROWS_AS(check({{"", CheckpointAction::Save, "a"}}), CheckpointError);

  // Inside an auto block the resumed run could pick another branch: refused.
  auto branch = named("scaled", std::make_shared<ScaleBlock>());
  branch->set_trigger("x");
  auto autob = std::make_shared<AutoBlocks>(std::vector<BlockPtr>{branch}, "maybe scale");
  autob->set_name("maybe");
  SequentialBlocks top({named("init", std::make_shared<InitBlock>()), autob}, "top");
  std::vector<CheckpointRequest> in_auto{{"maybe.scaled", CheckpointAction::Load, "a"}};
  CHECK_THROWS_WITH(check_checkpoint_paths(top, in_auto), Catch::Contains("auto block 'maybe'"));
  std::vector<CheckpointRequest> after_auto{{"maybe", CheckpointAction::Load, "a"}};
  CHECK_NOTHROW(check_checkpoint_paths(top, after_auto));
}

TEST_CASE("reading a bad checkpoint is a CheckpointError naming the file", "[engine][checkpoint]") {
  CkptDir tmp;
  const std::string path = tmp.file("bad.safetensors");
  auto expect_error = [&](const std::string& needle) {
    try {
      load_state(path);
      FAIL("expected CheckpointError");
    } catch (const CheckpointError& e) {
      INFO(e.what());
      CHECK(e.where().file == path);
      CHECK(std::string(e.what()).find(path) != std::string::npos);
      CHECK(std::string(e.what()).find(needle) != std::string::npos);
    }
  };
  SECTION("missing file") { expect_error("not found"); }
  SECTION("not a safetensors file") {
    std::ofstream(path) << "garbage that is not a checkpoint";
    expect_error("not a readable checkpoint");
  }
  SECTION("no tessera.state") {
    save_safetensors(path, {{"x", at::ones({1})}});
    expect_error("tessera.state");
  }
  SECTION("tessera.state is not JSON") {
    save_safetensors(path, {}, {{"tessera.state", "{nope"}});
    expect_error("not valid JSON");
  }
  SECTION("a tensor the metadata names is missing") {
    save_safetensors(path, {}, {{"tessera.state", R"({"version":1,"values":{"x":{"kind":"tensor","tensor":"x"}}})"}});
    expect_error("'x'");
  }
  SECTION("unknown kind") {
    save_safetensors(path, {}, {{"tessera.state", R"({"version":1,"values":{"x":{"kind":"blob"}}})"}});
    expect_error("blob");
  }
  SECTION("wrong field types") {
    save_safetensors(path, {}, {{"tessera.state", R"({"version":1,"values":{"n":{"kind":"int","value":"3"}}})"}});
    expect_error("'n'");
    save_safetensors(path, {}, {{"tessera.state", R"({"version":1,"values":{"l":{"kind":"float_list","value":{"a":1}}}})"}});
    expect_error("'l'");
  }
  SECTION("generator state of the wrong size") {
    save_safetensors(path, {{"g", at::zeros({3}, at::kByte)}},
                     {{"tessera.state", R"({"version":1,"values":{"g":{"kind":"generator","tensor":"g"}}})"}});
    expect_error("'g'");
  }
  SECTION("newer version") {
    save_safetensors(path, {}, {{"tessera.state", R"({"version":9,"values":{}})"}});
    expect_error("version");
  }
  SECTION("loading a checkpoint at another block than it was written after") {
    PipelineState s;
    s.set("x", Value(at::ones({1})));
    save_state(path, s, {{"tessera.block", "misc"}});
    CHECK_THROWS_WITH(CheckpointObserver({{"init", CheckpointAction::Load, path}}),
                      Catch::Contains("after block 'misc'"));
  }
  SECTION("the observer reports a missing file before the run") {
    CHECK_THROWS_AS(CheckpointObserver({{"init", CheckpointAction::Load, tmp.file("none.safetensors")}}),
                    CheckpointError);
  }
}
