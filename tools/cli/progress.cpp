#include "tools/cli/progress.h"

#include <atomic>
#include <csignal>
#include <cstring>

#include "tessera/error.h"

namespace tessera::cli {

namespace {

volatile std::sig_atomic_t g_interrupted = 0;

extern "C" void on_sigint(int) {
  g_interrupted = 1;
  std::signal(SIGINT, SIG_DFL);  // a second Ctrl-C ends the process at once
}

std::string seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, s < 10 ? "%.2f s" : "%.1f s", s);
  return buf;
}

}  // namespace

void install_interrupt_handler() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
}

bool interrupted() { return g_interrupted != 0; }

std::string progress_bar(int64_t step, int64_t total, double elapsed_s, int width) {
  const double frac = total > 0 ? static_cast<double>(step) / static_cast<double>(total) : 0.0;
  const int filled = static_cast<int>(frac * width + 0.5);
  std::string bar(static_cast<size_t>(std::max(0, std::min(width, filled))), '#');
  bar.resize(static_cast<size_t>(width), ' ');
  char buf[160];
  const double rate = elapsed_s > 0 ? static_cast<double>(step) / elapsed_s : 0.0;
  if (step <= 0 || rate <= 0) {
    std::snprintf(buf, sizeof buf, "%lld/%lld |%s|", static_cast<long long>(step), static_cast<long long>(total),
                  bar.c_str());
  } else {
    const double eta = static_cast<double>(total - step) / rate;
    // Slow steps read better as s/it (stable-diffusion.cpp's unit), fast ones as it/s (tqdm's).
    if (rate < 1.0)
      std::snprintf(buf, sizeof buf, "%lld/%lld |%s| %.2f s/it, ETA %s", static_cast<long long>(step),
                    static_cast<long long>(total), bar.c_str(), 1.0 / rate, seconds(eta).c_str());
    else
      std::snprintf(buf, sizeof buf, "%lld/%lld |%s| %.1f it/s, ETA %s", static_cast<long long>(step),
                    static_cast<long long>(total), bar.c_str(), rate, seconds(eta).c_str());
  }
  return buf;
}

RunProgress::RunProgress(bool show, bool tty, std::FILE* out) : show_(show), tty_(tty), out_(out) {}

void RunProgress::check_interrupt(const std::string& where) const {
  if (interrupted()) throw CancelledError("cancelled at " + where, {}, where);
}

void RunProgress::on_block_start(const std::string& path, const Block& block, PipelineState&) {
  check_interrupt("the start of '" + path + "'");
  if (block.kind() == BlockKind::Leaf) ran_leaf_ = true;
  if (path.find('.') != std::string::npos) return;  // only top-level blocks get a line
  top_block_ = path;
  ran_leaf_ = block.kind() == BlockKind::Leaf;
  block_start_ = loop_start_ = Clock::now();
}

void RunProgress::on_block_end(const std::string& path, const Block& block, PipelineState&) {
  check_interrupt("the end of '" + path + "'");
  if (!show_ || path != top_block_ || !ran_leaf_) return;  // no line for an auto block that selected nothing
  const double s = std::chrono::duration<double>(Clock::now() - block_start_).count();
  if (bar_open_) std::fputc('\n', out_);
  bar_open_ = false;
  std::fprintf(out_, "%s: %s\n", path.c_str(), seconds(s).c_str());
  std::fflush(out_);
}

bool RunProgress::on_step(const StepInfo& info) {
  if (interrupted()) return false;  // the loop turns this into CancelledError naming the step
  if (!show_) return true;
  const double elapsed = std::chrono::duration<double>(Clock::now() - loop_start_).count();
  const int64_t done = info.step + 1;
  const std::string line = info.loop_path + " " + progress_bar(done, info.total, elapsed);
  if (tty_) {
    std::fprintf(out_, "\r%s\033[K", line.c_str());
    bar_open_ = done < info.total;
    if (!bar_open_) std::fputc('\n', out_);
  } else {
    const int64_t every = std::max<int64_t>(1, (info.total + 9) / 10);
    if (done % every == 0 || done == info.total) std::fprintf(out_, "%s\n", line.c_str());
  }
  std::fflush(out_);
  return true;
}

}  // namespace tessera::cli
