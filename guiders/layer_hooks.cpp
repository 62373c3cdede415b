#include "guiders/layer_hooks.h"

#include <algorithm>
#include <cmath>

#include "tessera/error.h"
#include "guiders/guider_config.h"

namespace tessera {

bool LayerSelector::selects(const std::string& stack_fqn, int64_t index, bool stack_is_primary) const {
  const bool stack_matches = fqn == "auto" ? stack_is_primary : fqn == stack_fqn;
  return stack_matches && std::find(indices.begin(), indices.end(), index) != indices.end();
}

void LayerSkipConfig::validate(const std::string& what) const {
  if (!(0.0 <= dropout && dropout <= 1.0))
    throw ValidationError(what + ": `dropout` must be in [0, 1], got " + std::to_string(dropout));
  const bool full_dropout = std::fabs(dropout - 1.0) <= 1e-9;
  if (!full_dropout && skip_attention_scores)
    throw ValidationError(what + ": `skip_attention_scores` needs `dropout` 1.0");
  if (skip_attention && skip_attention_scores)
    throw ValidationError(what + ": `skip_attention` and `skip_attention_scores` cannot both be true; choose one");
  if (indices.empty()) throw ValidationError(what + ": `indices` is empty; name at least one layer");
}

LayerSkipConfig LayerSkipConfig::from_json(const nlohmann::json& j, const std::string& what) {
  if (!j.is_object()) throw ValidationError(what + " must be a map of LayerSkipConfig fields, got " + j.dump());
  GuiderConfigReader r("LayerSkipConfig", j);
  LayerSkipConfig c;
  auto indices = r.get_int_list("indices");
  if (!indices) throw ValidationError(what + ": LayerSkipConfig needs `indices`");
  c.indices = *indices;
  if (auto fqn = r.get_json("fqn")) {
    if (!fqn->is_string()) throw ValidationError(what + ": field 'fqn' must be a string, got " + fqn->dump());
    c.fqn = fqn->get<std::string>();
  }
  c.skip_attention = r.get_bool("skip_attention", true);
  c.skip_attention_scores = r.get_bool("skip_attention_scores", false);
  c.skip_ff = r.get_bool("skip_ff", true);
  c.dropout = r.get_float("dropout", 1.0);
  try {
    r.finish();
  } catch (const ValidationError& e) {
    throw ValidationError(what + ": " + e.message(), e.where(), e.block_path(), e.hint());
  }
  c.validate(what);
  return c;
}

nlohmann::json LayerSkipConfig::to_json() const {
  return {{"indices", indices},   {"fqn", fqn},         {"skip_attention", skip_attention},
          {"skip_attention_scores", skip_attention_scores}, {"skip_ff", skip_ff}, {"dropout", dropout}};
}

const char* layer_hook_kind_name(LayerHookKind kind) {
  switch (kind) {
    case LayerHookKind::IdentityAttention: return "identity_attention";
    case LayerHookKind::SkipAttention: return "skip_attention";
    case LayerHookKind::SkipFeedForward: return "skip_ff";
    case LayerHookKind::SkipBlock: return "skip_block";
    case LayerHookKind::SmoothedEnergyBlur: return "smoothed_energy_blur";
  }
  return "?";
}

std::pair<int64_t, int64_t> LayerHook::rows(int64_t total) const {
  const int64_t begin = std::clamp<int64_t>(batch_start, 0, total);
  const int64_t end = batch_size < 0 ? total : std::clamp<int64_t>(batch_start + batch_size, begin, total);
  return {begin, end};
}

std::vector<LayerHook> layer_hooks_from_config(const LayerSkipConfig& config) {
  std::vector<LayerHook> out;
  LayerSelector layers{config.indices, config.fqn};
  // Mirrors diffusers' _apply_layer_skip_hook: both flags skip the whole block; otherwise attention (scores or
  // output) and feed-forward hooks are installed independently.
  if (config.skip_attention && config.skip_ff) {
    out.push_back({LayerHookKind::SkipBlock, layers, config.dropout});
    return out;
  }
  if (config.skip_attention_scores)
    out.push_back({LayerHookKind::IdentityAttention, layers, config.dropout});
  else if (config.skip_attention)
    out.push_back({LayerHookKind::SkipAttention, layers, config.dropout});
  if (config.skip_ff) out.push_back({LayerHookKind::SkipFeedForward, layers, config.dropout});
  return out;
}

std::vector<const LayerHook*> hooks_for(const std::vector<LayerHook>& hooks, LayerHookKind kind,
                                        const std::string& stack_fqn, int64_t index, bool stack_is_primary) {
  std::vector<const LayerHook*> out;
  for (const LayerHook& h : hooks)
    if (h.kind == kind && h.layers.selects(stack_fqn, index, stack_is_primary)) out.push_back(&h);
  return out;
}

at::Tensor replace_hook_rows(const at::Tensor& normal, const LayerHook& hook,
                             const std::function<at::Tensor(int64_t begin, int64_t end)>& hooked) {
  auto [begin, end] = hook.rows(normal.size(0));
  if (begin == end) return normal;
  at::Tensor rows = hooked(begin, end);
  if (rows.sizes() != normal.narrow(0, begin, end - begin).sizes())
    throw ExecutionError(std::string("layer hook ") + layer_hook_kind_name(hook.kind) +
                         " produced rows of the wrong shape");
  if (begin == 0 && end == normal.size(0)) return rows;
  // Concatenate instead of writing in place: `normal` may be a view the caller still needs unchanged.
  std::vector<at::Tensor> parts;
  if (begin > 0) parts.push_back(normal.narrow(0, 0, begin));
  parts.push_back(rows);
  if (end < normal.size(0)) parts.push_back(normal.narrow(0, end, normal.size(0) - end));
  return at::cat(parts, 0);
}

at::Tensor skip_or_dropout(const at::Tensor& original_output, const at::Tensor& input, double dropout) {
  if (std::fabs(dropout - 1.0) <= 1e-9) return input;
  // diffusers calls F.dropout with its default training=True, so the perturbation is active at inference.
  return at::dropout(original_output, dropout, /*train=*/true);
}

}  // namespace tessera
