#pragma once
/// Layer hooks: what a guider asks a denoiser to perturb or skip for one pass (PAG, SLG, SEG, AutoGuidance).
/// They are declarative (diffusers registers module hooks instead): the guider describes the change, the model
/// applies it while running, and only to the rows of the batch that belong to the pass (`batch_start`,
/// `batch_size`), so several passes can share one model call.
#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace tessera {

/// Which layers a hook touches, as in diffusers' LayerSkipConfig: `fqn` names a stack of transformer blocks
/// ("transformer_blocks", "mid_block.attentions.0.transformer_blocks"…), `indices` the blocks in it. "auto" lets
/// the model pick its primary stack (diffusers resolves it the same way for DiT models).
struct LayerSelector {
  std::vector<int64_t> indices;
  std::string fqn = "auto";
  /// True when block `index` of the stack called `stack_fqn` is selected; "auto" matches the stack the model
  /// declares as primary (`stack_is_primary`).
  bool selects(const std::string& stack_fqn, int64_t index, bool stack_is_primary = true) const;
};

/// diffusers' LayerSkipConfig (hooks/layer_skip.py), with the same field names and defaults.
struct LayerSkipConfig {
  std::vector<int64_t> indices;
  std::string fqn = "auto";
  bool skip_attention = true;
  bool skip_attention_scores = false;
  bool skip_ff = true;
  double dropout = 1.0;

  /// Checks what diffusers checks (dropout in [0, 1], not both attention flags, dropout 1 with score skipping,
  /// non-empty indices); throws ValidationError naming `what`.
  void validate(const std::string& what) const;
  /// From a JSON object with diffusers' keys; unknown or mistyped keys are ValidationErrors naming them.
  static LayerSkipConfig from_json(const nlohmann::json& j, const std::string& what);
  nlohmann::json to_json() const;
};

/// What a hook does to each selected block.
enum class LayerHookKind {
  IdentityAttention,   ///< self-attention scores skipped: attention output = value (PAG; skip_attention_scores)
  SkipAttention,       ///< self-attention output = its input hidden states (skip_attention)
  SkipFeedForward,     ///< feed-forward output = its input (skip_ff)
  SkipBlock,           ///< whole block output = its input (skip_attention and skip_ff)
  SmoothedEnergyBlur,  ///< self-attention query blurred by a 2-D Gaussian (SEG)
};
const char* layer_hook_kind_name(LayerHookKind kind);

/// One change to apply to the selected layers, for one slice of the batch.
///   LayerHook h{LayerHookKind::IdentityAttention, {{0}, "transformer_blocks"}};
///   h.batch_start = 2; h.batch_size = 2;  // only rows 2 and 3 of the model call
struct LayerHook {
  LayerHookKind kind = LayerHookKind::SkipBlock;
  LayerSelector layers;
  /// < 1: instead of skipping, the original output goes through dropout with this probability (AutoGuidance).
  double dropout = 1.0;
  double blur_sigma = 9999999.0;        ///< SmoothedEnergyBlur only
  double blur_threshold_inf = 9999.0;   ///< SmoothedEnergyBlur: sigma above this means "infinite" blur (mean)
  int64_t batch_start = 0;
  int64_t batch_size = -1;              ///< -1: the whole batch
  /// The rows [begin, end) this hook covers in a batch of `total` rows.
  std::pair<int64_t, int64_t> rows(int64_t total) const;
};

/// The hooks that diffusers' hook registration would install for `config` (one or two: attention and/or FF).
std::vector<LayerHook> layer_hooks_from_config(const LayerSkipConfig& config);

/// Hooks of `kind` that select block `index` of stack `stack_fqn`.
std::vector<const LayerHook*> hooks_for(const std::vector<LayerHook>& hooks, LayerHookKind kind,
                                        const std::string& stack_fqn, int64_t index, bool stack_is_primary = true);

/// `normal` with the rows of `hook` replaced by `hooked(normal rows…)`: the model computes its usual output for
/// the whole batch, then overwrites only the hook's slice, so the other passes stay bit-identical.
/// `hooked` gets the slice bounds and returns the replacement rows.
at::Tensor replace_hook_rows(const at::Tensor& normal, const LayerHook& hook,
                             const std::function<at::Tensor(int64_t begin, int64_t end)>& hooked);

/// Applies a skip hook's output rule to rows of one sub-module: dropout 1 → `input` (skipped), else
/// dropout(original output, p). Shared by attention, feed-forward and block skipping.
at::Tensor skip_or_dropout(const at::Tensor& original_output, const at::Tensor& input, double dropout);

}  // namespace tessera
