#include "engine/op_profile.h"

#include <algorithm>
#include <cstdio>
#include <memory>
#include <mutex>
#include <sstream>

#include "tessera/error.h"

namespace tessera {

namespace {

using Clock = std::chrono::steady_clock;

// RecordFunction callbacks are plain function pointers: the one live profile's state is process-wide.
struct State {
  std::mutex mutex;  // entries are read by report() from any thread
  bool active = false;
  std::thread::id owner;
  int depth = 0;     // operator nesting on the owner thread
  std::string scope;
  std::map<std::pair<std::string, std::string>, std::pair<double, int64_t>> totals;
  at::CallbackHandle handle = 0;
};

State& state() {
  static State s;
  return s;
}

struct Start : at::ObserverContext {
  Clock::time_point t = Clock::now();
};

std::unique_ptr<at::ObserverContext> on_enter(const at::RecordFunction&) {
  State& s = state();
  if (std::this_thread::get_id() != s.owner) return nullptr;
  if (s.depth++ != 0) return nullptr;  // nested in another operator: part of its time
  return std::make_unique<Start>();
}

void on_exit(const at::RecordFunction& fn, at::ObserverContext* ctx) {
  State& s = state();
  if (std::this_thread::get_id() != s.owner) return;
  --s.depth;
  if (!ctx) return;
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - static_cast<Start*>(ctx)->t).count();
  std::lock_guard<std::mutex> lock(s.mutex);
  auto& e = s.totals[{s.scope, std::string(fn.name())}];
  e.first += ms;
  e.second += 1;
}

void append_rows(std::ostringstream& out, const std::vector<OpProfileEntry>& rows, double total, size_t top,
                 const char* indent) {
  char line[256];
  for (size_t i = 0; i < rows.size() && i < top; ++i) {
    std::snprintf(line, sizeof line, "%s%-34s %10.1f ms %5.1f %% %7lld calls\n", indent, rows[i].op.c_str(),
                  rows[i].total_ms, total > 0 ? 100.0 * rows[i].total_ms / total : 0.0,
                  static_cast<long long>(rows[i].calls));
    out << line;
  }
}

}  // namespace

OpProfile::OpProfile() {
  State& s = state();
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    if (s.active) throw UsageError("OpProfile: another operator profile is already running in this process");
    s.active = true;
    s.totals.clear();
    s.scope.clear();
    s.depth = 0;
    s.owner = std::this_thread::get_id();
  }
  s.handle = at::addGlobalCallback(at::RecordFunctionCallback(on_enter, on_exit).scopes({at::RecordScope::FUNCTION}));
}

OpProfile::~OpProfile() {
  State& s = state();
  at::removeCallback(s.handle);
  std::lock_guard<std::mutex> lock(s.mutex);
  s.active = false;
}

void OpProfile::set_scope(const std::string& scope) { state().scope = scope; }
const std::string& OpProfile::scope() const { return state().scope; }

std::vector<OpProfileEntry> OpProfile::entries() const {
  State& s = state();
  std::vector<OpProfileEntry> rows;
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    for (const auto& [key, value] : s.totals) rows.push_back({key.first, key.second, value.first, value.second});
  }
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.total_ms > b.total_ms; });
  return rows;
}

std::vector<std::pair<std::string, double>> OpProfile::scope_totals() const {
  std::map<std::string, double> by_scope;
  for (const auto& e : entries()) by_scope[e.scope] += e.total_ms;
  std::vector<std::pair<std::string, double>> rows(by_scope.begin(), by_scope.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  return rows;
}

std::string OpProfile::report(size_t top) const {
  const std::vector<OpProfileEntry> all = entries();
  std::map<std::string, OpProfileEntry> by_op;
  double total = 0;
  for (const auto& e : all) {
    auto& o = by_op[e.op];
    o.op = e.op;
    o.total_ms += e.total_ms;
    o.calls += e.calls;
    total += e.total_ms;
  }
  std::vector<OpProfileEntry> ops;
  for (auto& [name, e] : by_op) ops.push_back(e);
  std::sort(ops.begin(), ops.end(), [](const auto& a, const auto& b) { return a.total_ms > b.total_ms; });
  std::ostringstream out;
  char line[256];
  std::snprintf(line, sizeof line, "operators (outermost ATen calls), %.1f ms in all:\n", total);
  out << line;
  append_rows(out, ops, total, top, "  ");
  for (const auto& [scope, ms] : scope_totals()) {
    std::snprintf(line, sizeof line, "%s: %.1f ms (%.1f %%)\n", scope.empty() ? "(outside blocks)" : scope.c_str(), ms,
                  total > 0 ? 100.0 * ms / total : 0.0);
    out << line;
    std::vector<OpProfileEntry> rows;
    for (const auto& e : all)
      if (e.scope == scope) rows.push_back(e);
    append_rows(out, rows, ms, top, "    ");
  }
  return out.str();
}

void ProfileObserver::on_block_start(const std::string& path, const Block& block, PipelineState&) {
  if (block.kind() != BlockKind::Leaf) return;
  saved_.push_back(profile_.scope());
  profile_.set_scope(path);
}

void ProfileObserver::on_block_end(const std::string& path, const Block& block, PipelineState&) {
  if (block.kind() != BlockKind::Leaf || saved_.empty()) return;
  profile_.set_scope(saved_.back());
  saved_.pop_back();
}

}  // namespace tessera
