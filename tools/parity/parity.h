#pragma once
/// Parity runner: replays the cases of a golden manifest (../shared/parity format: manifest.json + one
/// safetensors file per case) against Tessera and reports, per case, PASS / FAIL / SKIP with the largest
/// absolute difference and the smallest cosine similarity over the compared tensors.
///
///   ParityOptions o{"tests/fixtures/parity/manifest.json", "^sched_", "", false};
///   int rc = run_parity(o, std::cout);  // 0 when no case failed
#include <ATen/ATen.h>

#include <functional>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace tessera {

/// What to run. `models_dir` empty = the manifest's models_dir, relative to the manifest file.
struct ParityOptions {
  std::string manifest;
  std::string filter_regex;  ///< ECMAScript regex searched in case names; empty = all
  std::string models_dir;
  bool verbose = false;      ///< one extra line per compared tensor
};

/// One manifest entry with its paths resolved.
struct ParityCase {
  std::string name, kind, api, notes;
  std::string file;        ///< absolute or manifest-relative path resolved against the manifest's folder
  std::string models_dir;  ///< resolved models folder
  nlohmann::json params, inputs, expected, tolerance;
};

/// Outcome of one case.
struct ParityResult {
  enum class Status { Pass, Fail, Skip };
  Status status = Status::Skip;
  std::string reason;           ///< why it failed or was skipped
  double max_abs_diff = 0.0;
  double cos = 1.0;             ///< smallest cosine similarity over the compared tensors
  std::vector<std::string> details;  ///< per-tensor lines (printed with verbose)
};

/// Compares tensors under a case's tolerance: |got - exp| <= atol + rtol * |exp| elementwise, integers and
/// {exact: true} exactly. Records the first failure; `result()` is Pass only if everything compared matched.
class ParityComparison {
 public:
  explicit ParityComparison(const nlohmann::json& tolerance);
  /// Compares `got` with `expected`; shape and (integer vs float) dtype must match too.
  bool compare(const std::string& name, const at::Tensor& got, const at::Tensor& expected);
  /// Compares two scalars (e.g. init_noise_sigma).
  bool compare_scalar(const std::string& name, double got, double expected);
  /// Records a failure that is not a numeric mismatch.
  void fail(const std::string& reason);
  bool ok() const { return failure_.empty(); }
  ParityResult result() const;

 private:
  double atol_ = 0.0, rtol_ = 0.0;
  bool exact_ = false;
  double max_abs_diff_ = 0.0, min_cos_ = 1.0;
  int compared_ = 0;
  std::string failure_;
  std::vector<std::string> details_;
};

/// Runs one case of the kind it was registered for. Throwing is allowed: the runner reports a FAIL line.
using ParityCaseRunner = std::function<ParityResult(const ParityCase&)>;

/// Adds (or replaces) the runner for `kind` ("scheduler" is built in; guiders, models, pipelines add theirs).
void register_case_runner(const std::string& kind, ParityCaseRunner runner);

/// Registers every case runner Tessera has (guiders, tokenizers, text encoders, UNet, VAE; schedulers
/// are built in). Idempotent. Tools that run parity call this once instead of listing runners.
void register_builtin_case_runners();

/// Runs every case of the manifest whose name matches the filter and prints one line per case:
/// `PASS|FAIL|SKIP name max_abs_diff=… cos=…` (with the reason for FAIL and SKIP), then
/// `N passed, M failed, K skipped`. Returns 0 only if nothing failed; 2 when the manifest cannot be read.
int run_parity(const ParityOptions& options, std::ostream& out);

/// Reads a case's tensor `name` from its file; std::nullopt when the file lacks it.
std::optional<at::Tensor> parity_tensor(const ParityCase& c, const std::string& name);
/// Like parity_tensor, but a missing tensor is a ValidationError naming the case file.
at::Tensor required_parity_tensor(const ParityCase& c, const std::string& name);
/// The model folder of a component case: models_dir / params.model (ValidationError when absent).
std::string parity_model_folder(const ParityCase& c);

}  // namespace tessera
