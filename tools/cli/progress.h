#pragma once
/// What `tessera run` shows while it runs, and Ctrl-C.
///
/// RunProgress watches a run (ExecObserver + a step callback): on a terminal, a bar per loop rewritten in place
/// (steps, it/s, ETA) and a line per finished top-level block; elsewhere (a log, a pipe) plain lines, a loop's at
/// most ten. Both go to stderr, so stdout keeps only results.
///
/// Interrupts: install_interrupt_handler() makes the first SIGINT set a flag (the second kills the process as
/// usual); RunProgress checks it at every block boundary and step and cancels the run there with CancelledError
/// (exit code 10), before any output file is written.
#include <chrono>
#include <cstdio>
#include <string>

#include "tessera/block.h"

namespace tessera::cli {

/// SIGINT sets the interrupt flag and restores the default handler, so a second Ctrl-C ends the process.
void install_interrupt_handler();
/// True once SIGINT arrived (after install_interrupt_handler).
bool interrupted();

class RunProgress : public ExecObserver {
 public:
  /// `show`: print progress (false with -q: only interrupts are watched). `tty`: the bar, else plain lines.
  RunProgress(bool show, bool tty, std::FILE* out = stderr);
  void on_block_start(const std::string& path, const Block& block, PipelineState& state) override;
  void on_block_end(const std::string& path, const Block& block, PipelineState& state) override;
  /// For RunOptions::step_callbacks: prints the step, returns false (cancel) when interrupted.
  bool on_step(const StepInfo& info);

 private:
  using Clock = std::chrono::steady_clock;
  void check_interrupt(const std::string& where) const;
  bool show_, tty_;
  std::FILE* out_;
  Clock::time_point block_start_, loop_start_;
  std::string top_block_;
  bool bar_open_ = false;
  bool ran_leaf_ = false;  ///< a leaf ran inside the current top-level block
};

/// "12/20 |#######     | 3.4 it/s, ETA 2.3 s" — the bar RunProgress draws (step = finished steps).
std::string progress_bar(int64_t step, int64_t total, double elapsed_s, int width = 24);

}  // namespace tessera::cli
