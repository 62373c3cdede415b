#include "engine/trace.h"

#include <unistd.h>

#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "engine/safetensors.h"

namespace tessera {

TraceObserver::TraceObserver() : origin_(std::chrono::steady_clock::now()) {}

int64_t TraceObserver::now_us() const {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - origin_).count();
}

void TraceObserver::on_block_start(const std::string& path, const Block& block, PipelineState&) {
  TraceEvent e;
  e.path = path;
  e.kind = block_kind_name(block.kind());
  e.type = block.type_id();
  e.depth = static_cast<int>(open_.size());
  e.start_us = now_us();
  open_.push_back(events_.size());
  events_.push_back(std::move(e));
}

void TraceObserver::on_block_end(const std::string& path, const Block&, PipelineState&) {
  const int64_t now = now_us();
  // Normally the innermost open block ends. If a composite swallowed a child's exception, the child never
  // ended: close it (and anything inside it) as unfinished so nesting stays consistent.
  size_t match = open_.size();
  for (size_t i = open_.size(); i-- > 0;)
    if (events_[open_[i]].path == path) {
      match = i;
      break;
    }
  if (match == open_.size()) return;  // an end without a start (observer attached mid-run)
  for (size_t i = open_.size(); i-- > match + 1;) {
    TraceEvent& child = events_[open_[i]];
    child.dur_us = now - child.start_us;
    child.unfinished = true;
  }
  TraceEvent& e = events_[open_[match]];
  e.dur_us = now - e.start_us;
  open_.resize(match);
}

std::string TraceObserver::chrome_trace_json() const {
  const int64_t now = now_us();
  const auto pid = static_cast<int64_t>(getpid());
  nlohmann::json events = nlohmann::json::array();
  for (const auto& e : events_) {
    const bool running = e.dur_us < 0;
    nlohmann::json args = {{"path", e.path}, {"kind", e.kind}, {"type", e.type}};
    if (running || e.unfinished) args["unfinished"] = true;
    events.push_back({{"name", e.path.empty() ? std::string("pipeline") : e.path},
                      {"cat", e.kind},
                      {"ph", "X"},
                      {"ts", e.start_us},
                      {"dur", running ? now - e.start_us : e.dur_us},
                      {"pid", pid},
                      {"tid", 1},
                      {"args", std::move(args)}});
  }
  nlohmann::json doc = {{"traceEvents", std::move(events)}, {"displayTimeUnit", "ms"}};
  // Block paths come from recipes and are UTF-8; replace rather than fail on a stray byte.
  return doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void TraceObserver::write_chrome_trace(const std::string& path) const {
  const std::string text = chrome_trace_json();
  write_file_atomically(path, [&](const ByteSink& sink) { sink(text.data(), text.size()); });
}

std::vector<TraceSummaryEntry> TraceObserver::summary() const {
  std::vector<TraceSummaryEntry> out;
  std::map<std::string, size_t> index;
  for (const auto& e : events_) {
    if (e.dur_us < 0 || e.unfinished) continue;
    auto it = index.find(e.path);
    if (it == index.end()) {
      it = index.emplace(e.path, out.size()).first;
      out.push_back({e.path, 0.0, 0});
    }
    out[it->second].total_ms += static_cast<double>(e.dur_us) / 1000.0;
    out[it->second].calls += 1;
  }
  return out;
}

std::string TraceObserver::summary_table() const {
  std::string out = "  total ms     calls   mean ms  block\n";
  char line[64];
  for (const auto& s : summary()) {
    std::snprintf(line, sizeof line, "%10.3f %9lld %9.3f  ", s.total_ms, static_cast<long long>(s.calls),
                  s.calls ? s.total_ms / static_cast<double>(s.calls) : 0.0);
    out += line + (s.path.empty() ? std::string("(pipeline)") : s.path) + "\n";
  }
  return out;
}

}  // namespace tessera
