// Tests for engine/trace (Chrome trace JSON with every executed block, sane durations and nesting, summaries) and
// engine/op_profile (operator times per scope).
#include <catch2/catch.hpp>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "tessera/block.h"
#include "tessera/components.h"
#include "tessera/registry.h"
#include "tessera/error.h"
#include "engine/op_profile.h"
#include "engine/trace.h"

namespace fs = std::filesystem;
using namespace tessera;

namespace {

/// Sleeps a little so that durations are measurable, then writes `out` = `in` + 1.
class TickBlock : public LeafBlock {
 public:
  explicit TickBlock(std::string name) { set_name(std::move(name)); }
  BlockSpec spec() const override {
    return BlockSpec("test.tick", "sleep and count").input({"n", Kind::Int}).output({"n", Kind::Int});
  }
  void run(Components&, BlockState& s) const override {
    std::this_thread::sleep_for(std::chrono::microseconds(300));
    s.set("n", Value((s.has("n") ? s.get_int("n") : 0) + 1));
  }
};

class FailBlock : public LeafBlock {
 public:
  FailBlock() { set_name("boom"); }
  BlockSpec spec() const override { return BlockSpec("test.fail", "always fails"); }
  void run(Components&, BlockState&) const override { throw std::runtime_error("boom"); }
};

/// prep → loop (2 iterations: a, b) → done
std::shared_ptr<SequentialBlocks> traced_pipeline() {
  auto loop = std::make_shared<LoopSequentialBlocks>(
      std::vector<BlockPtr>{std::make_shared<TickBlock>("a"), std::make_shared<TickBlock>("b")}, "loop",
      LoopOptions{"", "steps", "i", "t"});
  loop->set_name("loop");
  return std::make_shared<SequentialBlocks>(
      std::vector<BlockPtr>{std::make_shared<TickBlock>("prep"), loop, std::make_shared<TickBlock>("done")}, "root");
}

void run_traced(const Block& root, TraceObserver& trace) {
  Registry registry;
  Components comps(registry, nullptr);
  ExecContext ctx;
  ctx.components = &comps;
  ctx.observers.push_back(&trace);
  PipelineState state;
  state.set("steps", Value(int64_t(2)));
  root.execute(ctx, state, "");
}

}  // namespace

TEST_CASE("trace writes Chrome trace JSON with nested block intervals", "[engine][trace]") {
  auto root = traced_pipeline();
  TraceObserver trace;
  run_traced(*root, trace);

  std::string tmpl = (fs::temp_directory_path() / "tessera-trace-XXXXXX").string();
  REQUIRE(mkdtemp(tmpl.data()) != nullptr);
  const std::string file = tmpl + "/trace.json";
  trace.write_chrome_trace(file);
  std::ifstream in(file);
  const nlohmann::json doc = nlohmann::json::parse(in);
  fs::remove_all(tmpl);

  REQUIRE(doc.contains("traceEvents"));
  const auto& events = doc["traceEvents"];
  std::map<std::string, std::vector<std::pair<int64_t, int64_t>>> by_path;  // path → [start, end]
  std::map<std::string, std::string> kinds;
  for (const auto& e : events) {
    CHECK(e["ph"] == "X");
    for (const char* key : {"name", "cat", "ts", "dur", "pid", "tid"}) CHECK(e.contains(key));
    const std::string path = e["args"]["path"];
    const int64_t ts = e["ts"], dur = e["dur"];
    CHECK(ts >= 0);
    CHECK(dur >= 0);
    by_path[path].push_back({ts, ts + dur});
    kinds[path] = e["args"]["kind"];
  }
  for (const char* p : {"", "prep", "loop", "loop.a", "loop.b", "done"}) {
    INFO(p);
    CHECK(by_path.count(p) == 1);
  }
  CHECK(by_path["loop.a"].size() == 2);
  CHECK(by_path[""].size() == 1);
  CHECK(kinds["loop"] == "loop");
  CHECK(kinds["loop.a"] == "leaf");
  CHECK(kinds[""] == "sequential");

  auto within = [](std::pair<int64_t, int64_t> child, std::pair<int64_t, int64_t> parent) {
    return child.first >= parent.first && child.second <= parent.second;
  };
  const auto root_iv = by_path[""][0], loop_iv = by_path["loop"][0];
  for (const auto& [path, ivs] : by_path)
    for (const auto& iv : ivs) {
      INFO(path);
      CHECK(within(iv, root_iv));
      if (path.rfind("loop.", 0) == 0) CHECK(within(iv, loop_iv));
    }
  // Siblings run one after another.
  CHECK(by_path["prep"][0].second <= loop_iv.first);
  CHECK(loop_iv.second <= by_path["done"][0].first);
  CHECK(by_path["loop.a"][0].second <= by_path["loop.b"][0].first);
  CHECK(by_path["loop.b"][0].second <= by_path["loop.a"][1].first);
  // Leaves sleep 300 µs, so their durations are real.
  CHECK(by_path["prep"][0].second - by_path["prep"][0].first >= 300);
}

TEST_CASE("trace summary sums time and calls per path", "[engine][trace]") {
  auto root = traced_pipeline();
  TraceObserver trace;
  run_traced(*root, trace);
  auto summary = trace.summary();
  REQUIRE(summary.size() == 6);
  CHECK(summary[0].path == "");  // in order of first start
  CHECK(summary[1].path == "prep");
  std::map<std::string, TraceSummaryEntry> by;
  for (const auto& s : summary) by[s.path] = s;
  CHECK(by["loop.a"].calls == 2);
  CHECK(by["loop"].calls == 1);
  CHECK(by["loop.a"].total_ms >= 0.6);
  CHECK(by["loop"].total_ms >= by["loop.a"].total_ms + by["loop.b"].total_ms);
  CHECK(by[""].total_ms >= by["loop"].total_ms);
  CHECK(trace.summary_table().find("loop.b") != std::string::npos);
  for (const auto& e : trace.events()) {
    CHECK(e.dur_us >= 0);
    CHECK_FALSE(e.unfinished);
  }
  CHECK(trace.events()[0].depth == 0);
}

TEST_CASE("trace of a failed run marks the blocks that never ended", "[engine][trace]") {
  auto root = std::make_shared<SequentialBlocks>(
      std::vector<BlockPtr>{std::make_shared<TickBlock>("prep"), std::make_shared<FailBlock>()}, "root");
  TraceObserver trace;
  CHECK_THROWS(run_traced(*root, trace));
  const auto doc = nlohmann::json::parse(trace.chrome_trace_json());
  std::map<std::string, bool> unfinished;
  for (const auto& e : doc["traceEvents"]) {
    CHECK(e["dur"].get<int64_t>() >= 0);
    unfinished[e["args"]["path"]] = e["args"].value("unfinished", false);
  }
  CHECK_FALSE(unfinished.at("prep"));
  CHECK(unfinished.at("boom"));
  CHECK(unfinished.at(""));
  CHECK(trace.summary().size() == 1);  // only finished blocks are summed
  CHECK_THROWS_AS(trace.write_chrome_trace("/nonexistent-dir/trace.json"), OutputError);
}

TEST_CASE("OpProfile times outermost ATen operators per scope", "[trace][profile]") {
  at::Tensor a = at::rand({64, 64}), b = at::rand({64, 64});
  OpProfile profile;
  CHECK_THROWS_AS(OpProfile(), UsageError);  // one at a time
  profile.set_scope("first");
  at::Tensor c = at::matmul(a, b);  // aten::matmul calls aten::mm inside: counted once, as matmul
  profile.set_scope("second");
  at::Tensor d = a + b;
  at::Tensor e = a + b;
  profile.set_scope("");
  const auto entries = profile.entries();
  auto find = [&](const std::string& scope, const std::string& op) -> const OpProfileEntry* {
    for (const auto& x : entries)
      if (x.scope == scope && x.op == op) return &x;
    return nullptr;
  };
  REQUIRE(find("first", "aten::matmul"));
  CHECK(find("first", "aten::matmul")->calls == 1);
  CHECK_FALSE(find("first", "aten::mm"));
  REQUIRE(find("second", "aten::add"));
  CHECK(find("second", "aten::add")->calls == 2);
  CHECK_FALSE(find("first", "aten::add"));
  const std::string report = profile.report(4);
  CHECK_THAT(report, Catch::Matchers::Contains("aten::matmul") && Catch::Matchers::Contains("second:"));
}
