#pragma once
/// Shared machinery of the guiders that add a perturbed conditional pass to CFG (PAG, SLG, SEG):
///   pred = base + guidance_scale*(cond - uncond) + perturbed_scale*(cond - perturbed)
/// with each term present only while its window is active (CFG: [int(start*T), int(stop*T)); perturbation:
/// (int(p_start*T), int(p_stop*T)), start exclusive, as in diffusers).
/// Fix over diffusers: when CFG is off but the perturbation is on, diffusers runs the perturbed pass on the
/// *unconditional* inputs and without its layer hooks (its `is_conditional` counts passes); here the perturbed
/// pass always takes the conditional inputs and carries its hooks.
#include "guiders/guider.h"

namespace tessera {

/// Base of PerturbedAttentionGuidance, SkipLayerGuidance and SmoothedEnergyGuidance (not a diffusers class).
class LayerPerturbationGuidance : public Guider {
 public:
  int64_t num_conditions() const override;
  GuiderOutput forward(const std::map<std::string, at::Tensor>& preds) override;

  /// The hooks the perturbed pass carries.
  const std::vector<LayerHook>& hooks() const { return perturbation_.hooks; }
  /// Whether the perturbed pass runs at the current step.
  bool is_perturbation_enabled() const;

  /// The perturbed pass: its identifier, scale, window and hooks.
  struct Perturbation {
    std::string identifier;  ///< "pred_cond_skip" or "pred_cond_seg"
    double scale;
    double start;
    double stop;
    std::vector<LayerHook> hooks;
  };

 protected:
  LayerPerturbationGuidance(GuiderConfigReader& config, Perturbation perturbation);
  std::vector<PassPlan> plan() const override;

  Perturbation perturbation_;
};

/// LayerSkipConfigs from a guider config: `layers_key` (int or list → one default LayerSkipConfig per layer) or
/// `config_key` (a LayerSkipConfig map or a list of them); exactly one must be given. ValidationError otherwise.
std::vector<LayerSkipConfig> read_layer_skip_configs(GuiderConfigReader& config, const std::string& layers_key,
                                                     const std::string& config_key, const LayerSkipConfig& per_layer);

}  // namespace tessera
