#include "guiders/smoothed_energy_guidance.h"

#include <cmath>

#include "tessera/error.h"
#include "guiders/guider_config.h"

namespace tessera {

at::Tensor smoothed_energy_blur(const at::Tensor& query, double sigma, double threshold_inf) {
  if (query.dim() != 3) throw ExecutionError("smoothed_energy_blur expects a query [B, N, C]");
  const int64_t batch = query.size(0), seq_len = query.size(1), channels = query.size(2);
  const auto side = static_cast<int64_t>(std::sqrt(static_cast<double>(seq_len)));
  const int64_t square = side * side;
  if (square == 0) return query;
  at::Tensor grid = query.narrow(1, 0, square).permute({0, 2, 1}).reshape({batch, channels, side, side});
  if (sigma > threshold_inf) {
    grid = grid.mean({-2, -1}, /*keepdim=*/true).expand_as(grid);
  } else {
    const auto c6 = static_cast<int64_t>(std::ceil(6 * sigma));
    int64_t kernel_size = c6 + 1 - c6 % 2;
    kernel_size = std::min(kernel_size, side - (side % 2 - 1));  // odd, and its half fits reflect padding
    const double half = static_cast<double>(kernel_size - 1) / 2;
    at::Tensor x = at::linspace(-half, half, kernel_size, at::kFloat);
    at::Tensor pdf = at::exp(-0.5 * (x / sigma).pow(2));
    at::Tensor kernel1d = (pdf / pdf.sum()).to(query.options());
    at::Tensor kernel2d = at::matmul(kernel1d.unsqueeze(1), kernel1d.unsqueeze(0));
    kernel2d = kernel2d.expand({channels, 1, kernel_size, kernel_size});
    const int64_t pad = kernel_size / 2;
    grid = at::reflection_pad2d(grid, {pad, pad, pad, pad});
    const std::vector<int64_t> ones{1, 1}, zeros{0, 0};
    grid = at::conv2d(grid, kernel2d.contiguous(), at::Tensor(), at::IntArrayRef(ones), at::IntArrayRef(zeros),
                      at::IntArrayRef(ones), channels);
  }
  at::Tensor blurred = grid.reshape({batch, channels, square}).permute({0, 2, 1});  // [B, square, C]
  if (square == seq_len) return blurred.contiguous();
  return at::cat({blurred, query.narrow(1, square, seq_len - square)}, 1);
}

namespace {

std::vector<LayerHook> seg_hooks(GuiderConfigReader& config, double sigma, double threshold_inf) {
  auto layers = config.get_int_list("seg_guidance_layers");
  auto configs = config.get_json("seg_guidance_config");
  if (!layers && !configs)
    throw ValidationError("SmoothedEnergyGuidance needs `seg_guidance_layers` or `seg_guidance_config`");
  if (layers && configs)
    throw ValidationError("SmoothedEnergyGuidance: give only one of `seg_guidance_layers` and `seg_guidance_config`");
  std::vector<LayerSelector> selectors;
  if (layers) {
    for (int64_t l : *layers) selectors.push_back({{l}, "auto"});
  } else {
    std::vector<nlohmann::json> items;
    if (configs->is_object()) items.push_back(*configs);
    else if (configs->is_array()) items.assign(configs->begin(), configs->end());
    for (const auto& item : items) {
      // `_query_proj_identifiers` is accepted and ignored: the model knows its query projection.
      GuiderConfigReader r("SmoothedEnergyGuidanceConfig", item);
      auto indices = r.get_int_list("indices");
      auto fqn = r.get_json("fqn");
      r.finish();
      if (!indices || indices->empty())
        throw ValidationError("SmoothedEnergyGuidance.seg_guidance_config needs non-empty `indices`");
      if (fqn && !fqn->is_string())
        throw ValidationError("SmoothedEnergyGuidance.seg_guidance_config: field 'fqn' must be a string");
      selectors.push_back({*indices, fqn ? fqn->get<std::string>() : "auto"});
    }
  }
  if (selectors.empty())
    throw ValidationError("SmoothedEnergyGuidance: `seg_guidance_config` must be a map or a non-empty list of maps");
  std::vector<LayerHook> hooks;
  for (LayerSelector& s : selectors) {
    LayerHook h{LayerHookKind::SmoothedEnergyBlur, std::move(s)};
    h.blur_sigma = sigma;
    h.blur_threshold_inf = threshold_inf;
    hooks.push_back(std::move(h));
  }
  return hooks;
}

LayerPerturbationGuidance::Perturbation seg_perturbation(GuiderConfigReader& config) {
  const double scale = config.get_float("seg_guidance_scale", 2.8);
  const double sigma = config.get_float("seg_blur_sigma", 9999999.0);
  const double threshold_inf = config.get_float("seg_blur_threshold_inf", 9999.0);
  const double start = config.get_float("seg_guidance_start", 0.0);
  const double stop = config.get_float("seg_guidance_stop", 1.0);
  if (!(0.0 <= start && start < 1.0))
    throw ValidationError("SmoothedEnergyGuidance: `seg_guidance_start` must be in [0, 1), got " +
                          std::to_string(start));
  if (!(start <= stop && stop <= 1.0))
    throw ValidationError("SmoothedEnergyGuidance: `seg_guidance_stop` must be in [start, 1], got " +
                          std::to_string(stop));
  return {"pred_cond_seg", scale, start, stop, seg_hooks(config, sigma, threshold_inf)};
}

}  // namespace

SmoothedEnergyGuidance::SmoothedEnergyGuidance(GuiderConfigReader& config)
    : LayerPerturbationGuidance(config, seg_perturbation(config)) {}

}  // namespace tessera
