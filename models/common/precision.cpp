#include "models/common/precision.h"

#include "tessera/error.h"
#include "tessera/spec.h"

namespace tessera {

at::ScalarType model_dtype(const ComponentSpec& spec) {
  std::string problem;
  const std::string d = canonical_dtype(spec.dtype, &problem);
  if (d == "fp32") return at::kFloat;
  if (d == "bf16") return at::kBFloat16;
  throw ModelLoadError("component '" + spec.name + "': " + problem);
}

std::string dtype_display_name(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return "float32";
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    case at::kDouble: return "float64";
    default: return c10::toString(dtype);
  }
}

namespace {
c10::optional<at::Tensor> float_param(const at::Tensor& p) {
  if (!p.defined()) return c10::nullopt;
  return p.to(at::kFloat);
}
}  // namespace

at::Tensor group_norm_fp32(torch::nn::GroupNormImpl& norm, const at::Tensor& x) {
  if (x.scalar_type() == at::kFloat || !at::isFloatingType(x.scalar_type())) return norm.forward(x);
  const auto& o = norm.options;
  return at::group_norm(x.to(at::kFloat), o.num_groups(), float_param(norm.weight), float_param(norm.bias), o.eps(),
                        /*cudnn_enabled=*/true)
      .to(x.scalar_type());
}

at::Tensor layer_norm_fp32(torch::nn::LayerNormImpl& norm, const at::Tensor& x) {
  if (x.scalar_type() == at::kFloat || !at::isFloatingType(x.scalar_type())) return norm.forward(x);
  const auto& o = norm.options;
  return at::layer_norm(x.to(at::kFloat), o.normalized_shape(), float_param(norm.weight), float_param(norm.bias),
                        o.eps(), /*cudnn_enable=*/true)
      .to(x.scalar_type());
}

at::Tensor to_float32(const at::Tensor& t) {
  if (!t.defined() || !at::isFloatingType(t.scalar_type()) || t.scalar_type() == at::kFloat) return t;
  return t.to(at::kFloat);
}

}  // namespace tessera
