#pragma once
/// Checkpoints at block boundaries (ARCHITECTURE.md §9): `--checkpoint NAME:save|stop|load[=FILE]` dumps the
/// pipeline state right after block NAME finished, or injects such a dump and resumes there.
///
/// File format: a safetensors file. Tensors (tensor values, image pixels, tensor-list elements as `name.0`,
/// `name.1`…, generator states, map members as `name.key`) are stored as tensors; everything else (scalars,
/// strings, lists, the kind of every entry, kwargs tags) is a JSON document under the metadata key
/// `tessera.state`. Floats that JSON cannot hold (nan, ±inf) are stored as strings, so loading is bit-exact.
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tessera/block.h"
#include "tessera/state.h"

namespace tessera {

/// What to do at a checkpoint.
enum class CheckpointAction { Save, Stop, Load };
const char* checkpoint_action_name(CheckpointAction a);

/// One `--checkpoint` request: the block path, the action and the file (default `NAME.safetensors`).
struct CheckpointRequest {
  std::string block_path;
  CheckpointAction action = CheckpointAction::Save;
  std::string file;
};

/// Parses `NAME:save|stop|load[=FILE]`; throws UsageError showing the expected form.
CheckpointRequest parse_checkpoint_request(const std::string& text);

/// Thrown (after the state was written) by a `stop` checkpoint to end the run early. Deliberately not a
/// tessera::Error: it is not a failure, and the pipeline/CLI catches it to exit with success.
struct StopRun {
  std::string block_path;  ///< the block after which the run stopped
  std::string file;        ///< where the state was written
};

/// Metadata key holding the JSON description of the state.
constexpr const char* kCheckpointStateKey = "tessera.state";

/// Writes every value of `state` (and the kwargs tags of those values; tags of erased names are dropped,
/// they select nothing) to `path` atomically; `meta` is added to the file's
/// metadata (keys must not be `tessera.state`). Throws CheckpointError for a value that cannot be stored
/// (a generator that is not a CPU generator, a tensor dtype safetensors lacks, a name clash between a value
/// and another value's element), OutputError when the file cannot be written.
void save_state(const std::string& path, const PipelineState& state,
                const std::map<std::string, std::string>& meta = {});

/// Reads a state written by save_state. Tensors are copied out of the file (the state owns its memory) and
/// moved back to the device they were saved from when it is available (else kept on the CPU, with a warning).
/// Generators come back as new CPU generators with the saved state; values that shared one generator share it
/// again. Throws CheckpointError naming the file for a missing or malformed file, missing `tessera.state`
/// metadata, or a tensor the metadata names that the file lacks.
PipelineState load_state(const std::string& path);

/// Metadata of a checkpoint file other than `tessera.state` (e.g. `tessera.block`, `tessera.step`).
std::map<std::string, std::string> checkpoint_metadata(const std::string& path);

/// Checks requests against a block tree before anything runs: every path must exist (did-you-mean on a typo);
/// `load` needs every enclosing block to be a plain sequential block (inside a loop, auto or conditional block
/// the resumed run could not re-enter the same iteration or branch); at most one `load`; no save/stop on a
/// block that a run resumed by that load would never execute. Throws CheckpointError.
void check_checkpoint_paths(const Block& root, const std::vector<CheckpointRequest>& requests);

/// `file` with `.step{i}` inserted before the extension: `x.safetensors` → `x.step3.safetensors`.
std::string checkpoint_step_file(const std::string& file, int64_t step);

/// Carries out checkpoint requests during a run.
///  - save: writes the state each time the block ends and the run continues. Inside a loop body the block ends
///    once per iteration, so each end writes its own file, `checkpoint_step_file(file, k)` where k counts the
///    block's ends in this run (0-based; equal to the loop index for a single loop).
///  - stop: writes the state to exactly `file` at the block's first end, then throws StopRun.
///  - load: reads the file when the observer is constructed (errors surface before the run) and resumes the
///    run right after the block: attach() sets ExecContext::resume_after and on_resume. The loaded values
///    overlay the live state: every checkpointed value (and its tags) replaces the live one, values the
///    checkpoint lacks (inputs new to this run) are kept. Checkpoint values win because blocks before the
///    resume point may have replaced inputs (e.g. scaled `latents`); the checkpoint holds their result.
/// Call check_checkpoint_paths() first; the observer itself does not see the block tree.
class CheckpointObserver : public ExecObserver {
 public:
  /// `meta` is added to every file written (e.g. recipe path, seed).
  explicit CheckpointObserver(std::vector<CheckpointRequest> requests, std::map<std::string, std::string> meta = {});

  /// Registers this observer in `ctx` and, with a load request, sets ctx.resume_after / ctx.on_resume.
  void attach(ExecContext& ctx);
  /// The load request's block path ("" without one), for callers that build their own context.
  std::string resume_after() const;
  /// Injects the loaded state (no-op without a load request).
  std::function<void(PipelineState&)> on_resume() const;

  void on_block_start(const std::string& path, const Block& block, PipelineState& state) override;
  void on_block_end(const std::string& path, const Block& block, PipelineState& state) override;

  /// Files written so far, in order.
  const std::vector<std::string>& files_written() const { return written_; }

 private:
  std::vector<CheckpointRequest> requests_;
  std::map<std::string, std::string> meta_;
  std::shared_ptr<const PipelineState> loaded_;
  int load_ = -1;  ///< index of the load request in requests_
  std::vector<BlockKind> open_;              ///< kinds of the blocks running now, outermost first
  std::map<std::string, int64_t> ends_;      ///< how often each requested path ended
  std::vector<std::string> written_;
};

}  // namespace tessera
