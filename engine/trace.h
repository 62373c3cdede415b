#pragma once
/// Per-block timings (`--trace trace.json`, ARCHITECTURE.md §9): an observer that records when every block
/// starts and ends, writes Chrome trace JSON (chrome://tracing, Perfetto) and sums time per block path.
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "tessera/block.h"

namespace tessera {

/// One block execution. Times are microseconds since the observer was created (steady clock).
struct TraceEvent {
  std::string path;   ///< dotted block path ("" = the pipeline root)
  std::string kind;   ///< block_kind_name: leaf, sequential, loop, auto, conditional
  std::string type;   ///< registry id of a leaf, the kind for composites
  int64_t start_us = 0;
  int64_t dur_us = -1;  ///< -1 while the block runs (or when it threw)
  int depth = 0;        ///< number of enclosing recorded blocks
  bool unfinished = false;  ///< ended by an exception (dur_us then runs up to when that was noticed)
};

/// Total time and call count of one block path.
struct TraceSummaryEntry {
  std::string path;
  double total_ms = 0;
  int64_t calls = 0;
};

/// Records block wall times with their nesting. A block that throws never ends: its event stays open and is
/// written with the time up to the write, marked `"unfinished": true`, so a trace of a failed run still shows
/// where it failed. Not thread-safe: blocks run on one thread.
class TraceObserver : public ExecObserver {
 public:
  TraceObserver();

  void on_block_start(const std::string& path, const Block& block, PipelineState& state) override;
  void on_block_end(const std::string& path, const Block& block, PipelineState& state) override;

  /// Events in start order.
  const std::vector<TraceEvent>& events() const { return events_; }

  /// Writes `{"traceEvents": [{"name","cat","ph":"X","ts","dur","pid","tid","args":{"path","kind"}}…]}`
  /// atomically (temp file + rename); OutputError when it cannot be written.
  void write_chrome_trace(const std::string& path) const;
  /// The Chrome trace document as text (what write_chrome_trace writes).
  std::string chrome_trace_json() const;

  /// Per path: total milliseconds and number of calls, in order of first start.
  std::vector<TraceSummaryEntry> summary() const;
  /// summary() as an aligned text table for logs.
  std::string summary_table() const;

 private:
  int64_t now_us() const;
  std::chrono::steady_clock::time_point origin_;
  std::vector<TraceEvent> events_;
  std::vector<size_t> open_;  ///< indices into events_ of blocks running now, outermost first
};

}  // namespace tessera
