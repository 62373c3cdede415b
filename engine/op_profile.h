#pragma once
/// Where the time goes, by ATen operator and by block (`tessera run … --profile`, the benchmarks' --profile).
///
/// OpProfile installs a LibTorch RecordFunction observer for its lifetime that times the outermost operator calls
/// made on the constructing thread (operators called from inside another operator, and LibTorch's intra-op worker
/// threads, are part of the outer call's time) and sums them by (scope, operator). The scope is a label the caller
/// sets (ProfileObserver sets it to the running leaf block's path). For diagnosis, not for benchmark figures: it
/// reads the clock twice per operator call.
///
///   OpProfile profile;                       // one at a time per process
///   ProfileObserver blocks(profile);         // add to RunOptions::observers
///   pipeline.run(state, opts);
///   std::cout << profile.report(8);
#include <ATen/record_function.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tessera/block.h"

namespace tessera {

/// One (scope, operator) total.
struct OpProfileEntry {
  std::string scope;  ///< "" = outside any scope
  std::string op;     ///< ATen operator name, e.g. "aten::conv2d"
  double total_ms = 0;
  int64_t calls = 0;
};

class OpProfile {
 public:
  /// Starts observing operators on this thread. InternalError when another OpProfile is alive.
  OpProfile();
  ~OpProfile();
  OpProfile(const OpProfile&) = delete;
  OpProfile& operator=(const OpProfile&) = delete;

  /// Operators that start from now on are attributed to `scope`.
  void set_scope(const std::string& scope);
  const std::string& scope() const;

  /// All totals, largest first.
  std::vector<OpProfileEntry> entries() const;
  /// Total operator time per scope, largest first.
  std::vector<std::pair<std::string, double>> scope_totals() const;
  /// A text report: the `top` operators over everything, then per scope (largest first) its total and its `top`
  /// operators, each with ms, share and calls.
  std::string report(size_t top) const;
};

/// Sets the profile's scope to the running leaf block's path (composites keep their leaf's scope; on a leaf's end
/// the scope goes back to what it was).
class ProfileObserver : public ExecObserver {
 public:
  explicit ProfileObserver(OpProfile& profile) : profile_(profile) {}
  void on_block_start(const std::string& path, const Block& block, PipelineState& state) override;
  void on_block_end(const std::string& path, const Block& block, PipelineState& state) override;

 private:
  OpProfile& profile_;
  std::vector<std::string> saved_;
};

}  // namespace tessera
